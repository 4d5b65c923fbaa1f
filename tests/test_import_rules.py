"""The house plan's import rules (DESIGN §2), checked on the source with `ast`."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assigners", "model", "pipeline", "jobs")

# package -> top-level modules it may not import
FORBIDDEN = {
    "assigners": {"model", "pipeline", "jobs", "ray", "mlflow", "torchvision"},
    "model": {"assigners", "pipeline", "jobs", "ray", "mlflow", "torchvision"},
    "pipeline": {"jobs", "torchvision"},
    "jobs": {"torchvision"},
}
# Ray and MLflow only at the edges: these pipeline modules (and jobs/) may import them.
RAY_OK = {"precompute.py", "trainer.py", "sweep.py", "tracking.py", "ray_utils.py"}
MLFLOW_OK = {"tracking.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _files(pkg: str):
    return sorted((ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("pkg", PACKAGES)
def test_package_import_rules(pkg):
    bad = []
    for f in _files(pkg):
        hit = _imports(f) & FORBIDDEN[pkg]
        if pkg == "pipeline":
            if "ray" in _imports(f) and f.name not in RAY_OK:
                hit.add("ray")
            if "mlflow" in _imports(f) and f.name not in MLFLOW_OK:
                hit.add("mlflow")
        if hit:
            bad.append(f"{f.relative_to(ROOT)} imports {sorted(hit)}")
    assert not bad, "\n".join(bad)


def test_nothing_imports_jobs():
    bad = [str(f.relative_to(ROOT)) for pkg in ("assigners", "model", "pipeline", "tests")
           for f in _files(pkg) if "jobs" in _imports(f) and pkg != "tests"]
    assert not bad, bad
