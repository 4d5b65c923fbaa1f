"""fps of a sweep's cells, measured after all its trials, one cell at a time (no Ray here).

Trials run side by side (`sweep.max_concurrent_trials`): an fps measured as a trial ends would
time its model while other trials train on the same cores, each cell under a different load. So
the cells train without timing (`grid.cell_config` sets `eval.fps_runs=0`) and, once Tune is done,
the driver times every finished cell from its MLflow artifacts (`checkpoint/model.pt`,
`config/config.json`) with the sweep's own `eval` settings, on one Train worker's resources, one
cell after the other (`driver._time_cells`): nothing else runs meanwhile and every cell is timed
the same way. `fps` and `fps_setup` (what was measured) go to the cell's run; a cell that has an
`fps` already (a resumed sweep) is not timed again.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import EvalConfig, TrackingConfig
from pipeline.sweep.record import SweepRecord

FPS_SETUP_TAG = "fps_setup"  # the string metric `evaluate` returns, kept as a tag (as run_training does)


def untimed_runs(record: SweepRecord) -> list[str]:
    """Run ids of the sweep's FINISHED cells that have no fps yet, oldest first."""
    runs = tracking.child_runs(record.tracking(), record.parent_run_id)
    return [r.info.run_id for r in reversed(runs)
            if r.info.status == "FINISHED" and "fps" not in r.data.metrics]


def time_cell(tracking_cfg: TrackingConfig, run_id: str, eval_cfg: EvalConfig, device: str) -> dict[str, Any]:
    """Time one cell's final weights (`checkpoint_speed`) and log `fps` and its setup to its run."""
    # torch and the model only where a cell is timed
    from pipeline.eval.evaluate import checkpoint_speed
    from pipeline.eval.model_files import CONFIG_FILE, MODEL_FILE

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp, "timed")
        ckpt.mkdir()
        model = tracking.download_artifact(tracking_cfg, run_id, f"checkpoint/{MODEL_FILE}", tmp)
        config = tracking.download_artifact(tracking_cfg, run_id, f"config/{CONFIG_FILE}", tmp)
        if model is None or config is None:
            raise ValueError(f"MLflow run {run_id} lacks checkpoint/{MODEL_FILE} or config/{CONFIG_FILE}: "
                             "cannot time it")
        for file in (model, config):  # a local store keeps the artifact's folder, a server does not
            shutil.copy(file, ckpt / file.name)
        fps = checkpoint_speed(ckpt, eval_cfg, device)
    logger = tracking.RunLogger(tracking.resolve_tracking_uri(tracking_cfg), run_id)
    logger.log_metrics({"fps": fps["fps"]})
    logger.set_tags({FPS_SETUP_TAG: fps["setup"]})
    return fps
