"""`jobs.analyze --checkpoint C`: the maIoU paper's Fig. 2 for one trained model, on disk and in MLflow.

`analyze_checkpoint(path, out_dir=…)` rebuilds the model from the checkpoint's own config, lays
its anchors on the first `max_images` images of a split at the evaluation geometry, assigns them
with the checkpoint's assigner, and writes `loss_by_mob.csv` and `loss_by_mob.png`
(`pipeline.report.loss_by_mob`). With `log`, a run `loss-by-mob-<checkpoint>` in the checkpoint
config's MLflow experiment (tag `maskaware.kind=analysis`) gets the folder under `loss_by_mob/`
and the per-term counts and means.
"""
from __future__ import annotations

from pathlib import Path

import torch

from assigners import ASSIGNERS
from pipeline import tracking
from pipeline.data.augment import AugmentParams
from pipeline.data.datasets import InstanceDataset, load_split
from pipeline.eval.model_files import load_checkpoint
from pipeline.report.loss_by_mob import loss_by_mob, summary_metrics, write_loss_by_mob

ARTIFACT_DIR = "loss_by_mob"
KIND = "analysis"


def analyze_checkpoint(path: str | Path, *, out_dir: str | Path, split: str = "val", max_images: int | None = 100,
                       data_dir: str | None = None, overrides: list[str] = (), device: str = "cpu",
                       log: bool = True) -> dict:
    """Fig. 2 of the checkpoint at `path`; returns the summary numbers, the files and the MLflow run."""
    cfg, model = load_checkpoint(path, data_dir, overrides)
    dev = torch.device(device)
    model.to(dev)
    params = AugmentParams(scale=cfg.data.scale, train=False, min_box_size=cfg.data.min_box_size)
    dataset = InstanceDataset(load_split(cfg.data, split), params, "loader", keep_empty=False)
    stats = loss_by_mob(model, dataset, ASSIGNERS[cfg.train.assigner], dev, max_images)
    title = (f"{Path(path).name}: {cfg.train.assigner} at S = {cfg.data.scale}, {split} split "
             f"({min(len(dataset), max_images or len(dataset))} images) — loss terms by MOB, mean ± std")
    files = write_loss_by_mob(stats, Path(out_dir), title)
    metrics = summary_metrics(stats)
    result = {**metrics, "files": [str(f) for f in files]}
    if log:
        run = tracking.open_run(cfg.tracking, run_name=f"loss-by-mob-{Path(path).name}",
                                tags={"maskaware.kind": KIND, "checkpoint": str(Path(path).resolve()),
                                      "assigner": cfg.train.assigner, "scale": str(cfg.data.scale)})
        run.log_metrics(metrics)
        run.log_artifact(Path(out_dir), ARTIFACT_DIR)
        run.finish()
        result["mlflow_run_id"] = run.run_id
    return result
