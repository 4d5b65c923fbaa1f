"""CI-sized sweeps on a real multi-node Ray cluster (`multinode_ci`): a head and two one-CPU worker
nodes, each its own raylet, with an MLflow tracking server on 127.0.0.1.

1. a sweep of two cells runs its trials on different nodes and ends with every cell in the report
   and one MLflow run per cell (the reference for 2.);
2. the same grid again, where a worker node is removed without grace once both trials have a
   checkpoint (a replacement node joins, as an autoscaler would bring one back), and the sweep
   driver dies hard once a trial has completed (`MASKAWARE_SWEEP_CRASH_AFTER=1`); `--resume`
   against the same cluster finishes the rest. Each cell ends with the reference's metrics and
   bit-identical weights, the restarts resumed from checkpoints, one MLflow run per cell.
"""
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ray._private import ray_constants

from pipeline import tracking
from pipeline.config import TrackingConfig
from pipeline.eval.model_files import MODEL_FILE
from pipeline.report.table import COLUMNS
from pipeline.sweep.callbacks import CRASH_ENV, EXIT_CRASHED
from pipeline.sweep.record import SweepRecord
from tests.pipeline.multinode_ci import (NODE_ENV, add_worker, mlflow_server, start_cluster, stop_server,
                                         sweep_env, train_worker_nodes)
from tests.pipeline.sweep_ci import ROOT, ci_overrides, kill_session, run

pytestmark = [pytest.mark.slow, pytest.mark.multinode]
TIMEOUT_S = 600  # a sweep on three nodes of a loaded 2-core machine: minutes, not hours
CHECKPOINT_EVERY = 2
CHECKPOINTS_REGISTERED = "checkpoint_manager_snapshot.json"  # Ray Train writes it per registered checkpoint
SAME = ("segm/", "bbox/", "num_anchors")  # metrics that must not depend on where or how it ran


@pytest.fixture(scope="module")
def multinode(tmp_path_factory):
    """(cluster, tracking uri, tmp dir) for the whole module: starting nodes costs ~40 s here."""
    tmp = tmp_path_factory.mktemp("multinode")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in NODE_ENV.items():  # inherited by every node's processes
            mp.setenv(name, value)
        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # what ray read at import, for this process
        cluster = start_cluster()  # first: nodes fail to register when starting on a loaded machine
        try:
            server, uri = mlflow_server(tmp)
            try:
                yield cluster, uri, tmp
            finally:
                stop_server(server)
        finally:
            cluster.shutdown()


def _sets(tmp: Path, uri: str) -> list[str]:
    extra = {"tracking.tracking_uri": uri, "train.max_iters": 3 * CHECKPOINT_EVERY,
             "train.checkpoint_every": CHECKPOINT_EVERY}
    return [*ci_overrides(tmp, scales=(96,)), *(a for k, v in extra.items() for a in ("--set", f"{k}={v}"))]


def _runs(record: SweepRecord) -> dict[str, object]:
    """cell key -> its MLflow run; fails on a duplicated cell."""
    tcfg = TrackingConfig(tracking_uri=record.tracking_uri, experiment=record.experiment)
    runs = tracking.child_runs(tcfg, record.parent_run_id)
    keys = sorted(r.data.tags[tracking.CELL_KEY_TAG] for r in runs)
    assert keys == sorted(c.key for c in record.grid)  # one run per cell: nothing duplicated
    assert all(r.info.status == "FINISHED" for r in runs)
    return {r.data.tags[tracking.CELL_KEY_TAG]: r for r in runs}


def _weights(run) -> dict[str, torch.Tensor]:
    return torch.load(Path(run.data.tags["maskaware.checkpoint"]) / MODEL_FILE, weights_only=True)


@pytest.fixture(scope="module")
def spread(multinode):
    """The uninterrupted sweep: (record, runs by cell, its output, train workers' node ids)."""
    cluster, uri, tmp = multinode
    done = run([sys.executable, "-m", "jobs.sweep", "--preset", "tiny", "--name", "spread",
                *_sets(tmp, uri)], sweep_env(cluster), TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = SweepRecord.load(tmp / "sweeps" / "spread")
    return record, _runs(record), done.stdout, train_worker_nodes(cluster)


@pytest.mark.timeout(2 * TIMEOUT_S)
def test_sweep_trials_run_on_different_nodes(multinode, spread):
    cluster, uri, tmp = multinode
    record, runs, out, nodes = spread
    assert record.status == "finished" and record.tracking_uri == uri
    workers = {n.node_id for n in cluster.worker_nodes}
    assert len(nodes) == len(record.cells) and set(nodes) == workers  # one trial on each worker node
    table = (tmp / "sweeps" / "spread" / "report" / "table.md").read_text()
    assert table in out
    body = [ln for ln in table.splitlines()[2:] if ln.startswith("|")]
    assert len(body) == len(record.cells) and "–" not in "".join(body)
    for key, r in runs.items():
        for col in COLUMNS:
            value = r.data.metrics.get(col.metric)
            assert value is not None and math.isfinite(value), (key, col.metric)
        assert r.data.metrics["train/restarts"] == 0


def _checkpointed(runs_dir: Path, cells: int, timeout: float) -> None:
    """Wait until each of `cells` Ray Train runs under runs_dir has registered a checkpoint."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(list(runs_dir.glob(f"*/{CHECKPOINTS_REGISTERED}"))) >= cells:
            return
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of {cells} runs under {runs_dir} within {timeout} s")


def _kill_a_training_node(cluster):
    """Remove (no grace) a worker node that runs a Train worker; a fresh node joins instead."""
    busy = set(train_worker_nodes(cluster, alive_only=True))
    victim = next(n for n in cluster.worker_nodes if n.node_id in busy)
    cluster.remove_node(victim, allow_graceful=False)
    return victim.node_id, add_worker(cluster).node_id


@pytest.mark.timeout(3 * TIMEOUT_S)
def test_worker_node_and_driver_killed_then_resumed(multinode, spread):
    cluster, uri, tmp = multinode
    reference = spread[1]
    log = tmp / "killed.log"
    with log.open("w") as sink:  # its own session: the dead driver's processes are reaped below
        first = subprocess.Popen([sys.executable, "-m", "jobs.sweep", "--preset", "tiny", "--name", "killed",
                                  *_sets(tmp, uri)], env=sweep_env(cluster, **{CRASH_ENV: "1"}), cwd=ROOT,
                                 stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _checkpointed(tmp / "runs" / "sweeps" / "killed", len(reference), TIMEOUT_S)
            victim, replacement = _kill_a_training_node(cluster)
            first.wait(timeout=TIMEOUT_S)
        finally:
            first.kill()
            kill_session(first.pid)
    assert first.returncode == EXIT_CRASHED, log.read_text()[-5000:]
    record = SweepRecord.load(tmp / "sweeps" / "killed")
    tcfg = TrackingConfig(tracking_uri=record.tracking_uri, experiment=record.experiment)
    before = {r.data.tags[tracking.CELL_KEY_TAG]: r for r in tracking.child_runs(tcfg, record.parent_run_id)
              if r.info.status == "FINISHED"}
    assert 1 <= len(before) < len(record.cells)

    second = run([sys.executable, "-m", "jobs.sweep", "--resume", "--name", "killed",
                  "--set", f"sweep.root={tmp / 'sweeps'}"], sweep_env(cluster), TIMEOUT_S)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    record = SweepRecord.load(tmp / "sweeps" / "killed")
    assert record.status == "finished"
    runs = _runs(record)
    for key, old in before.items():  # finished before the driver died: neither rerun nor relogged
        assert runs[key].info.run_id == old.info.run_id and runs[key].info.end_time == old.info.end_time

    nodes = train_worker_nodes(cluster)
    assert victim in nodes and replacement in nodes  # the killed node's trial went on elsewhere
    # the killed node's trial went on from a checkpoint (the driver's death may add a restart to
    # the trial then in flight, or not when it had already reported its final checkpoint)
    restarts = {k: r.data.metrics["train/restarts"] for k, r in runs.items()}
    assert max(restarts.values()) >= 1, restarts
    assert all(r.data.metrics["train/resumed_from"] >= CHECKPOINT_EVERY
               for k, r in runs.items() if restarts[k])
    by_cell = {c.key: c for c in record.grid}
    ref_by_cell = {c.key: c for c in spread[0].grid}
    assert by_cell.keys() == ref_by_cell.keys()
    for key, r in runs.items():  # what an uninterrupted run gives, to the last bit
        same = {m: v for m, v in r.data.metrics.items() if m.startswith(SAME)}
        assert same == {m: v for m, v in reference[key].data.metrics.items() if m.startswith(SAME)}
        mine, theirs = _weights(r), _weights(reference[key])
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
