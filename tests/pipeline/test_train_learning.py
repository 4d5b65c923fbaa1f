"""It learns: the small CPU configuration fits a handful of synthetic images within minutes.

Trained through `run_training` in-process (`num_workers=0`: the same loop, evaluation and MLflow
logging as a Ray worker, without the cluster's ≈20 s start-up) and evaluated with COCO mask AP
on the images it trained on (`data.val_json` points at the training split), without
augmentation. Measured (docs/benchmarks.md, "learning"): segm/AP 28–34 after 300 iterations in
≈75 s on dev-cpu; an untrained model scores 0.0. Learning to generalise to held-out synthetic
images from scratch takes far longer than a test can run (same doc).
"""
import pytest

from pipeline.trainer import run_training
from tests.pipeline.train_support import tiny_config

pytestmark = pytest.mark.slow

ITERS = 300
MIN_MASK_AP = 10.0  # well under the measured 28–34


def test_small_configuration_reaches_non_trivial_mask_ap(tmp_path):
    cfg = tiny_config(tmp_path, "data.synthetic_train_images=16", "data.synthetic_val_images=4",
                      "data.val_json=annotations/train.json", "data.augment=false",
                      "train.batch_size=4", f"train.max_iters={ITERS}", "train.lr=0.003",
                      "train.lr_reference_batch=4", "train.warmup_iters=30",
                      "train.step_epochs=(1000,)", f"train.log_every={ITERS // 3}",
                      f"train.checkpoint_every={ITERS}", "eval.overlays=0")
    result = run_training(cfg, run_name="learning")
    m = result["metrics"]
    assert m["segm/AP"] >= MIN_MASK_AP, m
    assert m["bbox/AP"] >= MIN_MASK_AP, m
    assert m["train/skipped_steps"] == 0
