"""A multi-node Ray cluster on this one machine for the `multinode` tests, and an MLflow server.

`ray.cluster_utils.Cluster` starts every node as its own raylet (own node id, own object store,
own worker processes): the head offers only `trial_driver` (no CPU), each worker node one CPU, so
the Train worker of each concurrent trial (1 CPU) must run on a node of its own, and a worker node
removed without grace loses its processes at once, as a preempted spot instance does. Every node
and the sweep driver run in Ray's local-only mode (`pipeline.ray_utils`), so every process binds
127.0.0.1: nothing of the test cluster is reachable from the network, and no token is needed. The
nodes share this machine's disk, so `train.storage_path` is shared storage as NFS would be.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ray.cluster_utils import Cluster

from pipeline.ray_utils import LOCAL_ONLY_ENV, LOOPBACK
from pipeline.sweep.driver import DRIVER_RESOURCE
from tests.pipeline.sweep_ci import clean_env, free_ports

WORKER_NODES = 2
# Ray's OOM killer watches the whole machine's memory, which other jobs of a shared CI machine
# fill: it would kill the trials of this small cluster for them (refresh 0: the monitor off).
NODE_ENV = {LOCAL_ONLY_ENV: "0", "RAY_AUTH_MODE": "disabled", "RAY_memory_monitor_refresh_ms": "0"}
TRAIN_WORKER = "RayTrainWorker"
SERVER_START_S = 60


def start_cluster() -> Cluster:
    """Head (no CPU: trial drivers only) and WORKER_NODES one-CPU worker nodes, all on 127.0.0.1."""
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        node_ip_address=LOOPBACK, num_cpus=0, resources={DRIVER_RESOURCE: WORKER_NODES},
        include_dashboard=False))
    for _ in range(WORKER_NODES):
        add_worker(cluster)
    return cluster


def add_worker(cluster: Cluster):
    return cluster.add_node(node_ip_address=LOOPBACK, num_cpus=1)


def sweep_env(cluster: Cluster, **extra: str) -> dict[str, str]:
    """A sweep driver joining `cluster` (RAY_ADDRESS), bound to loopback like the nodes."""
    return clean_env(RAY_ADDRESS=cluster.address, **NODE_ENV, **extra)


def train_worker_nodes(cluster: Cluster, alive_only: bool = False) -> list[str]:
    """Node id (hex) of every Ray Train worker actor the cluster has run, one entry per actor."""
    actors = cluster.global_state.actor_table(None).values()
    return [a["Address"]["NodeID"] for a in actors if a["ActorClassName"] == TRAIN_WORKER
            and (a["State"] == "ALIVE" or not alive_only)]


def mlflow_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on 127.0.0.1 (sqlite backend, artifacts served by the server), as on the
    real cluster's head; returns (process, tracking uri) once it answers."""
    (port,) = free_ports(1)
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", LOOPBACK, "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
           "--artifacts-destination", str(tmp / "mlartifacts")]
    # its own session: the server forks uvicorn and a job runner, stopped with it by `stop_server`
    proc = subprocess.Popen(cmd, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    uri = f"http://{LOOPBACK}:{port}"
    deadline = time.time() + SERVER_START_S
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            return proc, uri
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}: {' '.join(cmd)}")
            time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"mlflow server did not answer at {uri} within {SERVER_START_S} s")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
