"""It learns: the `tiny` preset, trained from scratch, detects and segments held-out images.

The preset exactly as `make sweep` trains it at its data scale (128 px, ResNet-18 from scratch,
1,000 synthetic training images, 600 iterations of 8, AdamW), run in-process through
`run_training` (`num_workers=0`: the same loop, evaluation and MLflow logging as a Ray worker,
without the cluster's start-up), and scored with COCO AP on the 100 validation images, which it
never trains on. Measured figures and the probes behind the preset: docs/benchmarks.md,
"learning"; an untrained model scores 0.0.
"""
import pytest

from pipeline.config import apply_overrides

from pipeline.presets import get_preset
from pipeline.tracking import sqlite_uri
from pipeline.train.run import run_training

pytestmark = pytest.mark.slow

MIN_MASK_AP = 2.5  # well under the measured ≈6 (segm/AP ×100, held-out)
MIN_BOX_AP = 4.0  # well under the measured ≈10


def test_tiny_preset_generalises_to_held_out_images(tmp_path):
    cfg = apply_overrides(get_preset("tiny"), [
        f"data.synthetic_dir={tmp_path / 'synth'}", "train.num_workers=0",
        f"train.storage_path={tmp_path / 'ray'}",
        f"tracking.tracking_uri={sqlite_uri(tmp_path / 'mlflow.db')}", "tracking.experiment=test",
        "eval.overlays=0", "eval.fps_runs=1", "eval.fps_warmup=0"])
    assert cfg.data.val_json != cfg.data.train_json
    result = run_training(cfg, run_name="learning")
    m = result["metrics"]
    assert m["segm/AP"] >= MIN_MASK_AP, m
    assert m["bbox/AP"] >= MIN_BOX_AP, m
    assert m["train/skipped_steps"] == 0
