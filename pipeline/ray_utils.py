"""Starting a local Ray cluster the way every maskaware entry point wants it.

- Explicit `num_cpus` and a small object store: Ray's defaults (30 % of RAM for the store) are
  sized for big machines; our data reaches workers through their own DataLoaders, not the store.
- No dashboard in embedded mode; Train V2's placement-group cleaner then logs "Failed to query
  Ray Train Controller actor state" every 2 s. `quiet_logs`, installed as the job's
  `worker_process_setup_hook`, silences that logger in every Ray worker process, and the two
  that log each report's whole dict at INFO.
- Token auth (default in Ray 2.60 once a token exists) needs no set-up for an in-process
  `ray.init`; clients of a `ray start` cluster need `RAY_AUTH_MODE=token`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import ray

QUIET_LOGGERS = {  # logger -> the lowest level it still shows
    "ray.train.v2._internal.execution.controller.placement_group_cleaner": logging.ERROR,
    # every report's whole dict, at INFO, through the progress bar (workers; in-process runs)
    "ray.train.v2._internal.execution.context": logging.WARNING,
    "ray.train.v2._internal.execution.train_fn_utils": logging.WARNING,
}
QUIET_HOOK = "pipeline.ray_utils.quiet_logs"
DEFAULT_OBJECT_STORE_BYTES = 512 * 2**20
REPO_ROOT = str(Path(__file__).resolve().parents[1])


def quiet_logs() -> None:
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def worker_runtime_env() -> dict:
    """Runtime env for Train workers: the repo importable, the noisy logger quiet."""
    path = os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p)
    return {"env_vars": {"PYTHONPATH": path}, "worker_process_setup_hook": QUIET_HOOK}


def init_ray(num_cpus: int | None = None, *, num_gpus: int | None = None,
             object_store_bytes: int = DEFAULT_OBJECT_STORE_BYTES,
             resources: dict[str, float] | None = None, log_to_driver: bool = True) -> bool:
    """Connect to `RAY_ADDRESS` or start a local cluster; False when Ray was already up.

    `log_to_driver=False` leaves the workers' output in Ray's log files (`logs_dir()`) instead
    of copying every line to this process's console. The caller that got True owns the cluster
    and calls `ray.shutdown()`.
    """
    if ray.is_initialized():
        return False
    quiet_logs()
    kwargs = {"runtime_env": worker_runtime_env(), "log_to_driver": log_to_driver}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
        return True
    # "local": start our own cluster even when a `ray start` head runs on this machine (joining it
    # would reject num_cpus and the other start-up settings).
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, include_dashboard=False,
             object_store_memory=object_store_bytes, resources=resources, **kwargs)
    return True


def logs_dir() -> str:
    """Where the running Ray session keeps every worker's stdout and stderr (worker-*.out/.err;
    on a cluster, the same path on each node)."""
    node = ray._private.worker._global_node  # Ray 2.60 has no public API for this path
    return node.get_logs_dir_path() if node is not None else "/tmp/ray/session_latest/logs"
