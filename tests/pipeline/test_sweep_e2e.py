"""A CI-sized sweep end to end (Ray Tune → Ray Train → MLflow → report), crashed and resumed.

The first run's driver dies hard (`os._exit`, MASKAWARE_SWEEP_CRASH_AFTER=1) as soon as one trial
has completed, with a second trial in flight and Tune's state as a crash leaves it (Tune then
reruns trials it had not recorded as finished); `--resume` must finish the grid without
retraining a finished cell and without a second MLflow run for any cell. (The gentler Ctrl-C
path, MASKAWARE_SWEEP_INTERRUPT_AFTER, is covered in test_sweep.py.)
"""
import math
import subprocess
import sys

import pytest

from pipeline import tracking
from pipeline.config import TrackingConfig
from pipeline.report.table import COLUMNS
from pipeline.sweep.callbacks import CRASH_ENV, EXIT_CRASHED
from pipeline.sweep.record import SweepRecord
from pipeline.sweep.timing import FPS_SETUP_TAG
from tests.pipeline.sweep_ci import ROOT, ci_overrides, clean_env, kill_session, run

NAME = "ci"
TIMEOUT_S = 420


def _children(record: SweepRecord) -> list:
    tcfg = TrackingConfig(tracking_uri=record.tracking_uri, experiment=record.experiment)
    return tracking.child_runs(tcfg, record.parent_run_id)


@pytest.mark.slow
@pytest.mark.timeout(2 * TIMEOUT_S)
def test_crashed_sweep_resumes_without_duplicates(tmp_path):
    sets = ci_overrides(tmp_path)
    # its own session, so that the Ray processes the dead driver leaves behind can be reaped
    first = subprocess.Popen([sys.executable, "-m", "jobs.sweep", "--preset", "tiny", "--name", NAME,
                              *sets], env=clean_env(**{CRASH_ENV: "1"}), cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = first.communicate(timeout=TIMEOUT_S)
    finally:
        first.kill()
        kill_session(first.pid)
    assert first.returncode == EXIT_CRASHED, out[-5000:]
    assert f"resume with: python -m jobs.sweep --resume --name ci --set sweep.root={tmp_path / 'sweeps'}" in out
    record = SweepRecord.load(tmp_path / "sweeps" / NAME)
    assert record.status == "running"  # as the crash left it
    before = {r.data.tags[tracking.CELL_KEY_TAG]: r for r in _children(record)
              if r.info.status == "FINISHED"}
    assert 1 <= len(before) < len(record.cells)

    second = run([sys.executable, "-m", "jobs.sweep", "--resume", "--name", NAME,
                  "--set", f"sweep.root={tmp_path / 'sweeps'}"], clean_env(), TIMEOUT_S)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    record = SweepRecord.load(tmp_path / "sweeps" / NAME)
    assert record.status == "finished"

    runs = _children(record)
    keys = sorted(r.data.tags[tracking.CELL_KEY_TAG] for r in runs)
    assert keys == sorted(c.key for c in record.grid)  # one run per cell: nothing duplicated
    assert all(r.info.status == "FINISHED" for r in runs)
    after = {r.data.tags[tracking.CELL_KEY_TAG]: r for r in runs}
    for key, old in before.items():  # finished before the interruption: neither rerun nor relogged
        assert after[key].info.run_id == old.info.run_id
        assert after[key].info.end_time == old.info.end_time

    # the report, as printed and on disk: every cell, every column, finite
    table = (tmp_path / "sweeps" / NAME / "report" / "table.md").read_text()
    assert table in second.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in second.stdout
    for r in runs:
        for col in COLUMNS:
            value = r.data.metrics.get(col.metric)
            assert value is not None and math.isfinite(value), (r.data.tags[tracking.CELL_KEY_TAG], col.metric)
    # fps: timed after all trials, cell by cell, each run saying what was measured
    assert all(r.data.tags.get(FPS_SETUP_TAG, "").startswith("cpu (1 threads), ") for r in runs)
    assert "fps: cpu (1 threads), " in table and "each cell timed alone after all trials" in table
    body = [ln for ln in table.splitlines()[2:] if ln.startswith("|")]
    assert len(body) == len(record.cells) and "–" not in "".join(body)
    assert (tmp_path / "sweeps" / NAME / "report" / "figures" / "mask_ap.png").stat().st_size > 0
