"""The house's import rules (docs/design.md §2), checked on the source with `ast`.

Lazy imports (inside functions) count like any other: an arrow is an arrow.
"""
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
# pipeline's rooms, top to bottom: a room imports only rooms below it (and itself). The modules at
# pipeline's top level (config, presets, tracking, ray_utils) form the floor.
LAYERS = ("report", "sweep", "train", "eval", "data")
FLOOR = "floor"
# Ray and MLflow only at the edges: these pipeline modules (and jobs/) may import them.
RAY_OK = {"data/precompute.py", "train/loop.py", "train/run.py", "train/rendezvous.py", "sweep/driver.py",
          "sweep/callbacks.py", "tracking.py", "ray_utils.py"}
# tracking_view.py labels what the UI shows (kept out of tracking.py, the writer, for size);
# eval/mlflow_model.py holds the pyfunc class, which must call down into pipeline.eval.
MLFLOW_OK = {"tracking.py", "tracking_view.py", "eval/mlflow_model.py"}


def _modules(path: Path) -> set[str]:
    """Every module name `path` imports, absolute and dotted ("pipeline.data.coco")."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # `from pipeline import tracking`
    return names


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def _files(pkg: str):
    return sorted((ROOT / pkg).rglob("*.py"))


def _room(module: str) -> str | None:
    """The room of a `pipeline.…` module name (None for names that are not pipeline modules)."""
    parts = module.split(".")
    if parts[0] != "pipeline" or len(parts) < 2:
        return None
    if parts[1] in LAYERS:
        return parts[1]
    return FLOOR if (ROOT / "pipeline" / f"{parts[1]}.py").is_file() else None


def _rank(room: str) -> int:
    return len(LAYERS) if room == FLOOR else LAYERS.index(room)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_package_import_rules(pkg):
    bad = []
    for f in _files(pkg):
        rel = f.relative_to(ROOT / pkg).as_posix()
        hit = _top(_modules(f)) & FORBIDDEN[pkg]
        if pkg == "pipeline":
            if "ray" in _top(_modules(f)) and rel not in RAY_OK:
                hit.add("ray")
            if "mlflow" in _top(_modules(f)) and rel not in MLFLOW_OK:
                hit.add("mlflow")
        if hit:
            bad.append(f"{f.relative_to(ROOT)} imports {sorted(hit)}")
    assert not bad, "\n".join(bad)


def test_pipeline_rooms_only_import_downwards():
    bad = []
    for f in _files("pipeline"):
        rel = f.relative_to(ROOT / "pipeline")
        mine = rel.parts[0] if len(rel.parts) > 1 else FLOOR
        for name in _modules(f):
            theirs = _room(name)
            if theirs is None or theirs == mine:
                continue
            if _rank(theirs) <= _rank(mine):
                bad.append(f"pipeline/{rel.as_posix()} ({mine}) imports {name} ({theirs})")
    assert not bad, "\n".join(sorted(set(bad)))


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = {}
    files = {}
    for pkg in PACKAGES:
        for f in _files(pkg):
            mod = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            files[mod.removesuffix(".__init__")] = f
    for mod, f in files.items():
        graph[mod] = {n for n in _modules(f) if n in files and n != mod}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " -> ".join(path[path.index(n):] + [n])
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_nothing_imports_jobs():
    bad = [str(f.relative_to(ROOT)) for pkg in ("assigners", "model", "pipeline", "tests")
           for f in _files(pkg) if "jobs" in _top(_modules(f)) and pkg != "tests"]
    assert not bad, bad
