"""cluster.yaml: Ray's own offline validation (no cloud account) plus our lint.

Ray's `prepare_config` merges the AWS defaults and `validate_config` applies the autoscaler's JSON
schema and cross-field checks; both are private APIs, hence the pinned Ray. The schema does not
look inside `provider`/`node_config` or at image tags, so `lint` checks what matters to us: images
pinned to the Ray we pin, a GPU worker type that scales from 0, a head that hosts trial drivers
but never trains, the project installed with pinned dependencies, Ray's token auth on every
node, and nothing bound to 0.0.0.0.
"""
import copy
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
LOCK = ROOT / "requirements.lock"
LOOPBACK = "127.0.0.1"


def _load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _pinned_ray() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("ray[")]
    return spec.split("==")[1]


def _all_strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in _all_strings(k) + _all_strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _all_strings(v)]
    return []


def lint(cfg: dict, ray_version: str) -> list[str]:
    """Our rules on top of Ray's schema; returns the list of problems (empty = fine)."""
    problems = []
    docker = cfg.get("docker", {})
    images = {k: docker[k] for k in ("image", "head_image", "worker_image") if k in docker}
    if not images:
        problems.append("no docker image")
    for key, image in images.items():
        tag = image.rpartition(":")[2] if ":" in image else ""
        if not tag.startswith(f"{ray_version}-"):
            problems.append(f"docker.{key}={image!r} is not pinned to ray {ray_version}")
    types = cfg.get("available_node_types", {})
    head = types.get(cfg.get("head_node_type"), {})
    if head.get("resources", {}).get("CPU") != 0:
        problems.append("the head node must advertise CPU: 0 (no training on the head)")
    if head.get("resources", {}).get("trial_driver", 0) < 1:
        problems.append("the head node must advertise the trial_driver resource")
    gpu_types = [n for n, t in types.items() if t.get("resources", {}).get("GPU", 0) >= 1]
    if not gpu_types:
        problems.append("no node type with a GPU")
    problems += [f"GPU node type {n} does not scale from 0" for n in gpu_types
                 if types[n].get("min_workers", 0) != 0]
    text = "\n".join(_all_strings(cfg))
    if "0.0.0.0" in text:
        problems.append("something binds to 0.0.0.0")
    start = " ".join(cfg.get("head_start_ray_commands", []))
    if f"--dashboard-host={LOOPBACK}" not in start:
        problems.append("the dashboard is not bound to 127.0.0.1")
    if "mlflow server" not in start or f"--host {LOOPBACK}" not in start:
        problems.append("no MLflow server bound to 127.0.0.1 on the head")
    setup = " ".join(cfg.get("setup_commands", []))
    if not re.search(r'"torch==[\d.]+"', setup):
        problems.append("torch is not pinned in setup_commands")
    if "--env RAY_AUTH_MODE=token" not in docker.get("run_options", []):
        problems.append("Ray token auth is not on for every node (docker run_options)")
    if not any(remote.endswith("/.ray/auth_token") for remote in cfg.get("file_mounts", {})):
        problems.append("the auth token is not mounted on the nodes")
    mounts = cfg.get("file_mounts", {})
    project = [remote for remote, local in mounts.items() if local == "."]
    if not any(f"pip install -q --no-deps {remote}" in setup for remote in project):
        problems.append("setup_commands do not install the project mounted from '.' (without resolving)")
    if not any(f"-r {remote}/{LOCK.name}" in setup for remote in project):
        problems.append(f"setup_commands do not install {LOCK.name}")
    return problems


def test_cluster_yaml_passes_rays_validation():
    cfg = prepare_config(_load())
    validate_config(cfg)
    assert cfg["head_node_type"] == "head_cpu"
    assert cfg["available_node_types"]["head_cpu"]["max_workers"] == 0  # filled in by prepare_config


def test_cluster_yaml_passes_our_lint():
    assert ray.__version__ == _pinned_ray()
    assert lint(_load(), ray.__version__) == []


def _lock() -> dict[str, str]:
    """requirements.lock as {normalised name: version}."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def test_setup_installs_exactly_the_lock_and_the_makefiles_torch():
    """The cluster installs what `make setup` installs: the Makefile's torch pin, then the lock."""
    setup = " ".join(_load()["setup_commands"])
    pins = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([\w.+]+)"', setup))
    assert set(pins) == {"torch"}, "every pin but torch comes from requirements.lock"
    (make_torch,) = re.findall(r"^TORCH\s*\?=\s*torch==([\w.+]+)", (ROOT / "Makefile").read_text(), re.M)
    assert pins["torch"] == make_torch


def test_lock_pins_every_declared_dependency_within_its_range():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    lock = _lock()
    assert "torch" not in lock  # the Makefile pins it, per machine (CPU or CUDA build)
    for spec in map(Requirement, declared):
        name = re.sub(r"[-_.]+", "-", spec.name).lower()
        if name == "torch":
            continue
        assert name in lock, f"{spec.name} is not in {LOCK.name}: run make lock"
        assert spec.specifier.contains(lock[name], prereleases=True), f"{spec} vs locked {lock[name]}"


def _mutated(path: list, value):
    cfg = _load()
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


@pytest.mark.parametrize("path,value,error", [
    (["available_node_types", "head_cpu", "resources", "trial_driver"], 0.5, jsonschema.ValidationError),
    (["head_node_type"], "head_gpu", ValueError),
    (["available_node_types", "gpu_worker", "max_worker"], 2, jsonschema.ValidationError),
    (["setup_command"], [], jsonschema.ValidationError),
    (["available_node_types", "gpu_worker", "min_workers"], 9, ValueError),
])
def test_rays_validation_rejects_broken_variants(path, value, error):
    with pytest.raises(error):
        validate_config(prepare_config(_mutated(path, value)))


@pytest.mark.parametrize("path,value,needle", [
    (["docker", "worker_image"], "rayproject/ray:latest-gpu", "not pinned"),
    (["docker", "head_image"], "rayproject/ray:2.9.0-py311-cpu", "not pinned"),
    (["available_node_types", "gpu_worker", "resources"], {"CPU": 48}, "no node type with a GPU"),
    (["available_node_types", "gpu_worker", "min_workers"], 1, "does not scale from 0"),
    (["available_node_types", "head_cpu", "resources"], {"CPU": 8}, "CPU: 0"),
    (["head_start_ray_commands"], ["ray start --head --dashboard-host=0.0.0.0"], "0.0.0.0"),
    (["setup_commands"], ["pip install torch mlflow"], "torch is not pinned"),
    (["docker", "run_options"], ["--shm-size=16g"], "token auth is not on"),
])
def test_lint_catches_what_rays_schema_lets_through(path, value, needle):
    cfg = _mutated(path, value)
    validate_config(prepare_config(copy.deepcopy(cfg)))  # Ray is fine with it ...
    assert any(needle in p for p in lint(cfg, ray.__version__))  # ... we are not
