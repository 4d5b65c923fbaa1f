"""Starting a local Ray cluster the way every maskaware entry point wants it.

- Explicit `num_cpus` and a small object store: Ray's defaults (30 % of RAM for the store) are
  sized for big machines; our data reaches workers through their own DataLoaders, not the store.
- No dashboard in embedded mode; Train V2's placement-group cleaner then logs "Failed to query
  Ray Train Controller actor state" every 2 s. `quiet_logs`, installed as the job's
  `worker_process_setup_hook`, silences that logger in every Ray worker process, and the two
  that log each report's whole dict at INFO.
- A local cluster is not a network service: every process binds 127.0.0.1 (`start_local_ray`).
  On Linux Ray 2.60 binds its gRPC servers (GCS, raylet, every worker, the agents) to the node IP
  or all interfaces, and turns `_node_ip_address="127.0.0.1"` back into the machine's external
  address; only its local-only mode (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the macOS/Windows
  default) keeps the node IP on loopback. That mode also makes `ray start` refuse to run, so it
  is set only while `ray.init` starts the processes (they inherit it), then put back.
- Token auth: `ray.init` turns it on for every new local cluster (creating ~/.ray/auth_token
  once) unless `RAY_AUTH_MODE` says otherwise; clients of a `ray start` cluster (cluster mode,
  bound to the node IP) need `RAY_AUTH_MODE=token` and the cluster's token.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

import ray
from ray._private import ray_constants

QUIET_LOGGERS = {  # logger -> the lowest level it still shows
    "ray.train.v2._internal.execution.controller.placement_group_cleaner": logging.ERROR,
    # every report's whole dict, at INFO, through the progress bar (workers; in-process runs)
    "ray.train.v2._internal.execution.context": logging.WARNING,
    "ray.train.v2._internal.execution.train_fn_utils": logging.WARNING,
}
QUIET_HOOK = "pipeline.ray_utils.quiet_logs"
DEFAULT_OBJECT_STORE_BYTES = 512 * 2**20
REPO_ROOT = str(Path(__file__).resolve().parents[1])
LOOPBACK = "127.0.0.1"
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # read by ray_constants.ENABLE_RAY_CLUSTER
# How often Ray Train's controller polls its workers (Ray's default: 2 s). After the final report
# a run waits for the next polls to see the workers finish: ≈ 5 s per run at 2 s, ≈ 2 s at 0.5 s
# (docs/benchmarks.md, issue 15 on a quiet machine); one poll is one cheap RPC per worker.
TRAIN_POLL_ENV, TRAIN_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"


def quiet_logs() -> None:
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def prompt_train_controller() -> None:
    """Poll Ray Train's workers every `TRAIN_POLL_S` unless the user set the interval: call before
    creating a trainer (Ray Train passes the variable on to the controller it starts)."""
    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_S)


def worker_runtime_env() -> dict:
    """Runtime env for Train workers: the repo importable, the noisy logger quiet."""
    path = os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p)
    return {"env_vars": {"PYTHONPATH": path}, "worker_process_setup_hook": QUIET_HOOK}


@contextmanager
def _local_only_mode():
    """Ray's local-only mode for this process (the constant, read when ray is imported) and the
    processes it starts (the environment variable), put back afterwards."""
    saved_env, saved_flag = os.environ.get(LOCAL_ONLY_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOCAL_ONLY_ENV], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(LOCAL_ONLY_ENV, None)
        else:
            os.environ[LOCAL_ONLY_ENV] = saved_env


def start_local_ray(**kwargs) -> None:
    """`ray.init` of a new single-node cluster whose every process listens on 127.0.0.1 only."""
    with _local_only_mode():
        # "local": our own cluster even when a `ray start` head runs on this machine (joining it
        # would reject num_cpus and the other start-up settings).
        ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=False, **kwargs)


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
    start_local_ray(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus,
                    object_store_memory=object_store_bytes, resources=resources, **kwargs)
    return True


@contextmanager
def ray_session(num_cpus: int | None = None, object_store_memory: int = DEFAULT_OBJECT_STORE_BYTES,
                shutdown: bool = True):
    """Use the running Ray cluster, or start a local one (shut down at the end if `shutdown`)."""
    if ray.is_initialized():
        yield
        return
    kwargs = {"log_to_driver": False, "logging_level": logging.WARNING}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
    else:
        start_local_ray(num_cpus=num_cpus, object_store_memory=object_store_memory, **kwargs)
    try:
        yield
    finally:
        if shutdown:
            ray.shutdown()


@contextmanager
def one_cluster():
    """The running Ray cluster, or a local one started by the first step with work (its steps
    pass shutdown_ray=False) and shut down at the end."""
    started = not ray.is_initialized()
    try:
        yield
    finally:
        if started and ray.is_initialized():
            ray.shutdown()


def logs_dir() -> str:
    """Where the running Ray session keeps every worker's stdout and stderr (worker-*.out/.err;
    on a cluster, the same path on each node)."""
    node = ray._private.worker._global_node  # Ray 2.60 has no public API for this path
    return node.get_logs_dir_path() if node is not None else "/tmp/ray/session_latest/logs"
