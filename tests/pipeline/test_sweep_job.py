"""`ray job submit --working-dir . -- python -m jobs.sweep ...` against a local `ray start --head`.

The head binds its dashboard/job server to 127.0.0.1 and uses Ray 2.60's token auth (the token
passed as RAY_AUTH_TOKEN, so nothing is written to ~/.ray); it runs in a private temp dir on free
ports, so it never meets another Ray instance of the machine, and is stopped by killing its own
processes (`ray stop` would stop every Ray of the machine).
"""
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from pipeline import tracking
from pipeline.config import TrackingConfig
from pipeline.sweep.driver import DRIVER_RESOURCE
from pipeline.sweep.record import SweepRecord
from tests.pipeline.sweep_ci import ROOT, ci_overrides, clean_env, free_ports, kill_cluster, run

TIMEOUT_S = 360
IGNORED_PARTS = {".git", "__pycache__", ".pytest_cache", ".hypothesis", ".venv"}


def _snapshot(root: Path) -> dict[str, float]:
    """mtime of every file of the working dir a job could write into."""
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")
            if p.is_file() and not IGNORED_PARTS & set(p.relative_to(root).parts)}


@pytest.fixture
def ray_head():
    """A token-authenticated local head; yields (dashboard url, client env)."""
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, dash, client, agent, agent_grpc, metrics, rt_env, nm, om = free_ports(9)
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex)
    cmd = ["ray", "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
           f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={rt_env}",
           f"--node-manager-port={nm}", f"--object-manager-port={om}", "--num-cpus=2",
           f"--object-store-memory={400 * 2**20}", f"--resources={{\"{DRIVER_RESOURCE}\": 2}}",
           f"--temp-dir={temp}", "--disable-usage-stats"]
    try:
        started = run(cmd, env, 120, cwd=Path(temp))
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield f"http://127.0.0.1:{dash}", env
    finally:
        kill_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(2 * TIMEOUT_S)
def test_ray_job_submit_runs_the_sweep_on_a_token_authenticated_head(ray_head, tmp_path):
    url, env = ray_head
    anonymous = run(["ray", "job", "list", "--address", url],
                    {**env, "RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": ""}, 60)
    assert anonymous.returncode != 0
    assert "authentication token" in (anonymous.stdout + anonymous.stderr).lower()

    before = _snapshot(ROOT)
    sets = ci_overrides(tmp_path, scales=(96,))
    job = run(["ray", "job", "submit", "--address", url, "--working-dir", str(ROOT),
               "--submission-id", f"sweep-{uuid.uuid4().hex[:8]}", "--",
               "python", "-m", "jobs.sweep", "--preset", "tiny", "--name", "job", *sets],
              env, TIMEOUT_S)
    out = job.stdout + job.stderr
    assert job.returncode == 0, out[-4000:]
    assert "Connecting to existing Ray cluster" in out  # it joined the head, not a local Ray
    assert "succeeded" in out

    record = SweepRecord.load(tmp_path / "sweeps" / "job")
    assert record.status == "finished"
    runs = tracking.child_runs(TrackingConfig(tracking_uri=record.tracking_uri,
                                              experiment=record.experiment), record.parent_run_id)
    assert sorted(r.data.tags[tracking.CELL_KEY_TAG] for r in runs) == sorted(c.key for c in record.grid)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert (tmp_path / "sweeps" / "job" / "report" / "table.md").is_file()
    assert _snapshot(ROOT) == before  # nothing written into the submitted working dir
    assert os.path.isabs(record.tracking_uri[len("sqlite:///"):])
