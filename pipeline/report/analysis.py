"""Dataset analysis from the precomputed tables: MOB distribution and anchors' IoU vs maIoU.

`analyze(parquet_dir, out_dir, scale)` reads one split's Parquet tables (`InstanceStore`),
writes `mob.png` (paper Fig. 3a) and `iou_vs_maiou.png` (Fig. 3c) and returns the numbers.
For Fig. 3c each image is taken at the evaluation geometry (resized to S×S without keeping the
aspect), the ATSS anchors of that scale are laid on it, and every anchor-GT pair with IoU > 0
is kept; maIoU is counted on the original-resolution masks through
`MaskIntegrals.with_transform` (the same mapping as the Parquet integrals path).
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from assigners import box_iou, mask_aware_iou
from pipeline.data.instance_table import InstanceStore
from pipeline.report.anchor_grids import input_anchors
from pipeline.report.plots import plot_iou_vs_maiou, plot_mob_distribution


def mob_table(store: InstanceStore) -> tuple[np.ndarray, np.ndarray]:
    """(MOB float [N], label int [N]) of every instance in the tables."""
    return (store.table.column("mob").to_numpy().astype(np.float64),
            store.table.column("label").to_numpy().astype(np.int64))


def overlap_pairs(gt: torch.Tensor, anchors: torch.Tensor, integrals) -> tuple[np.ndarray, np.ndarray]:
    """IoU and maIoU of the (GT, anchor) pairs with IoU > 0 (paper Fig. 3c's population)."""
    iou = box_iou(gt, anchors)  # [G, A]
    maiou = mask_aware_iou(gt, anchors, integrals)  # [G, A]
    keep = iou > 0
    return iou[keep].numpy(), maiou[keep].numpy()


def iou_maiou_pairs(store: InstanceStore, scale: int, max_images: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """IoU and maIoU of every (GT, ATSS anchor) pair with IoU > 0, over up to `max_images` images."""
    anchors, _ = input_anchors("atss", scale)
    ious, maious = [], []
    image_ids = list(store.index)[:max_images] if max_images else list(store.index)
    boxes_all = store.table.column("box").combine_chunks().values.to_numpy().reshape(-1, 4)  # [N, 4]
    for image_id in image_ids:
        start, count = store.rows(image_id)
        integrals = store.integrals(image_id)
        h, w = integrals.image_size
        sx, sy = scale / w, scale / h
        gt = torch.from_numpy(boxes_all[start:start + count] * np.array([sx, sy, sx, sy], dtype=np.float32))
        mapped = integrals.with_transform(torch.tensor([1 / sx, 0.0, 1 / sy, 0.0]), torch.tensor([0, 0, w, h]))
        iou, maiou = overlap_pairs(gt, anchors, mapped)
        ious.append(iou)
        maious.append(maiou)
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    return cat(ious), cat(maious)


def analyze(parquet_dir: str, out_dir: str, scale: int = 550, max_images: int | None = 200,
            names: list[str] | None = None) -> dict:
    """Write mob.png and iou_vs_maiou.png into `out_dir`; return the summary numbers."""
    store = InstanceStore(parquet_dir)
    manifest = os.path.join(parquet_dir, "_manifest.json")  # written by pipeline.data.precompute
    if names is None and os.path.exists(manifest):
        with open(manifest) as f:
            names = json.load(f).get("category_names")
    mob, labels = mob_table(store)
    iou, maiou = iou_maiou_pairs(store, scale, max_images)
    os.makedirs(out_dir, exist_ok=True)
    mob_png = plot_mob_distribution(mob, os.path.join(out_dir, "mob.png"), labels=labels, names=names)
    joint_png = plot_iou_vs_maiou(iou, maiou, os.path.join(out_dir, "iou_vs_maiou.png"))
    return {
        "instances": int(len(mob)),
        "mob_below_0.5": float((mob < 0.5).mean()) if len(mob) else 0.0,
        "mob_median": float(np.median(mob)) if len(mob) else 0.0,
        "pairs": int(len(iou)),
        "maiou_above_iou": float((maiou > iou).mean()) if len(iou) else 0.0,
        "figures": [mob_png, joint_png],
    }
