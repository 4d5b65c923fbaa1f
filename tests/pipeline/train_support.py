"""Small configurations shared by the training tests (not a test module)."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import Config, apply_overrides

from pipeline.presets import get_preset
from pipeline.tracking import sqlite_uri


def tiny_config(root: Path, *overrides: str, synth: Path | None = None) -> Config:
    """The `tiny` preset shrunk to test size: 128 px synthetic images, a slim ResNet-18 YOLACT.

    `root` holds the Ray storage and the MLflow store; `synth` (default `root/synth`) the data.
    """
    synth = synth or root / "synth"
    base = [
        f"data.synthetic_dir={synth}", "data.synthetic_train_images=32",
        "data.synthetic_val_images=8", "data.synthetic_size=128", "data.scale=128",
        "data.loader_workers=0",
        # The JSON route: no Ray precompute per test module. The Parquet route (the default) gives
        # the same batches and AP (test_table_source) and trains in test_train_local.
        "data.source=coco",
        # The preset trains without augmentation; the training tests keep it on so that resume and
        # determinism cover the augmentation's random state too.
        "data.augment=true",
        "model.fpn_channels=32", "model.num_protos=8",
        "train.batch_size=2", "train.max_iters=8", "train.warmup_iters=4", "train.log_every=2",
        "train.checkpoint_every=4", "train.num_workers=0", "train.max_failures=1",
        f"train.storage_path={root / 'ray'}",
        f"tracking.tracking_uri={sqlite_uri(root / 'mlflow.db')}", "tracking.experiment=test",
        "eval.fps_warmup=1", "eval.fps_runs=3", "eval.overlays=2",
    ]
    return apply_overrides(get_preset("tiny"), base + list(overrides))
