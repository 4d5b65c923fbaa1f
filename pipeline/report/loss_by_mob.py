"""The maIoU paper's Fig. 2: a trained model's loss terms per MOB bin, for anchors of similar IoU.

For every image of a split at the evaluation geometry (resize to S×S, no augmentation) the model
runs once (eval mode), the checkpoint's own assigner labels its anchors, and each anchor gets its
*unweighted* loss terms as training computes them (docs/design.md §8):
- negatives (assigned background) whose best box IoU with a GT lies in [0.3, 0.5): classification
  (softmax CE against background), binned by the MOB of that best GT;
- positives whose IoU with their assigned GT lies in [0.5, 0.7): classification (CE at the GT's
  class), box (SmoothL1, β = 1, summed over the 4 encoded deltas) and mask (BCE inside the GT box,
  divided by its area in prototype pixels), binned by the MOB of their GT.
Per (kind, term, MOB bin): the anchor count, the mean and the population std. The paper's point:
at equal IoU, anchors on low-MOB objects (the mask fills little of the box) carry larger losses.

`loss_by_mob(model, dataset, assign_fn, device)` returns the table; `write_loss_by_mob` writes
`loss_by_mob.csv` and `loss_by_mob.png` (three panels: negatives, positives, counts).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from assigners import BACKGROUND, box_iou, mob_ratio
from model.box_coding import box_area, encode
from model.masks import crop_region, mask_logits, resize_masks
from pipeline.report.plots import save_figure

NEG_IOU = (0.3, 0.5)  # the paper's negatives of similar IoU
POS_IOU = (0.5, 0.7)  # ... and positives
MOB_EDGES = np.linspace(0.0, 1.0, 11)  # 10 bins of 0.1; a MOB over 1 (pixel rounding) joins the last
TERMS = (("negative", "cls"), ("positive", "cls"), ("positive", "box"), ("positive", "mask"))
CSV_FIELDS = ("kind", "term", "mob_low", "mob_high", "count", "mean", "std")


@dataclass
class BinStats:
    kind: str
    term: str
    counts: np.ndarray  # [bins]
    means: np.ndarray  # [bins], NaN where empty
    stds: np.ndarray  # [bins], NaN where empty


def _in(x: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    return (x >= bounds[0]) & (x < bounds[1])


def _mask_terms(proto: torch.Tensor, coef: torch.Tensor, gt_boxes: torch.Tensor, gt_masks: torch.Tensor,
                image_size: tuple[int, int]) -> torch.Tensor:
    """Per-positive mask loss [n]: proto [k,Hp,Wp], coef [n,k] (or [n,4,k]), GT boxes [n,4] in input
    pixels, GT masks bool [n,S,S]."""
    Hp, Wp = proto.shape[-2:]
    scale = proto.new_tensor([Wp / image_size[1], Hp / image_size[0]] * 2)
    boxes = gt_boxes * scale  # [n, 4] proto pixels
    logits = mask_logits(proto, coef, boxes)  # [n, Hp, Wp]
    gt = resize_masks(gt_masks, (Hp, Wp)).float()  # [n, Hp, Wp]
    bce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none") * crop_region(boxes, Hp, Wp)
    return bce.sum((1, 2)) / box_area(boxes).clamp(min=1.0)


def image_terms(out: dict, b: int, target: dict, matched: torch.Tensor) -> dict[tuple[str, str], tuple]:
    """(kind, term) -> (MOB [n], loss [n]) of image `b`'s selected anchors (float64 numpy)."""
    gt = target["boxes"].float()
    if gt.shape[0] == 0:
        return {}
    anchors = out["anchors"].float()  # [A, 4]
    iou = box_iou(gt, anchors)  # [G, A]
    mob = mob_ratio(gt, target["integrals"]).float()  # [G]
    pos = matched >= 0  # [A]
    cls_target = torch.zeros_like(matched)
    cls_target[pos] = target["labels"][matched[pos]] + 1
    ce = F.cross_entropy(out["cls"][b].float(), cls_target, reduction="none")  # [A]
    best_iou, best_gt = iou.max(0)  # [A] each
    neg = (matched == BACKGROUND) & _in(best_iou, NEG_IOU)
    own = iou.gather(0, matched.clamp(min=0)[None]).squeeze(0)  # [A]: IoU with the assigned GT
    idx = (pos & _in(own, POS_IOU)).nonzero().squeeze(1)  # [n]
    g = matched[idx]  # [n]
    box = F.smooth_l1_loss(out["box"][b, idx].float(), encode(gt[g], anchors[idx]), beta=1.0,
                           reduction="none").sum(1)  # [n]
    mask = _mask_terms(out["proto"][b].float(), out["coef"][b, idx].float(), gt[g], target["masks"][g],
                       out["image_size"])
    np64 = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
    pos_mob = np64(mob[g])
    return {("negative", "cls"): (np64(mob[best_gt[neg]]), np64(ce[neg])),
            ("positive", "cls"): (pos_mob, np64(ce[idx])), ("positive", "box"): (pos_mob, np64(box)),
            ("positive", "mask"): (pos_mob, np64(mask))}


def bin_stats(kind: str, term: str, mob: np.ndarray, loss: np.ndarray) -> BinStats:
    """Count, mean and population std of `loss` per MOB bin (`MOB_EDGES`)."""
    bins = np.clip(np.digitize(mob, MOB_EDGES[1:-1]), 0, len(MOB_EDGES) - 2)  # [n]
    k = len(MOB_EDGES) - 1
    counts = np.bincount(bins, minlength=k)
    sums = np.bincount(bins, weights=loss, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
        sq = np.bincount(bins, weights=(loss - means[bins]) ** 2, minlength=k)
        stds = np.where(counts > 0, np.sqrt(sq / counts), np.nan)
    return BinStats(kind, term, counts, means, stds)


@torch.no_grad()
def loss_by_mob(model: torch.nn.Module, dataset, assign_fn, device: torch.device,
                max_images: int | None = None) -> list[BinStats]:
    """Fig. 2's numbers over the first `max_images` images of `dataset` (all when None)."""
    model.eval()
    found: dict[tuple[str, str], list[tuple]] = {t: [] for t in TERMS}
    for index in range(min(len(dataset), max_images or len(dataset))):
        item = dataset[index]
        target = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in item.items()}
        if target["boxes"].shape[0] == 0:
            continue
        out = model(target["image"][None].to(device))
        if out.get("cls_sigmoid"):
            raise ValueError("Fig. 2 reads the softmax classification loss; a sigmoid-head (RS Loss) "
                             "checkpoint has none")
        matched = assign_fn(target["boxes"], target["masks"], out["anchors"].float(),
                            list(out["num_anchors_per_level"]), target["integrals"])
        for key, pair in image_terms(out, 0, target, matched).items():
            found[key].append(pair)
    stats = []
    for kind, term in TERMS:
        pairs = found[(kind, term)]
        mob = np.concatenate([p[0] for p in pairs]) if pairs else np.zeros(0)
        loss = np.concatenate([p[1] for p in pairs]) if pairs else np.zeros(0)
        stats.append(bin_stats(kind, term, mob, loss))
    return stats


def write_csv(stats: list[BinStats], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_FIELDS)
        for s in stats:
            for i in range(len(s.counts)):
                w.writerow([s.kind, s.term, f"{MOB_EDGES[i]:.1f}", f"{MOB_EDGES[i + 1]:.1f}", int(s.counts[i]),
                            "" if np.isnan(s.means[i]) else repr(float(s.means[i])),
                            "" if np.isnan(s.stds[i]) else repr(float(s.stds[i]))])
    return path


def plot_loss_by_mob(stats: list[BinStats], path: Path, title: str = "") -> Path:
    """The paper's three panels: negatives' classification loss, positives' three losses (mean ± std
    per MOB bin), and the anchor counts per bin."""
    centres = (MOB_EDGES[:-1] + MOB_EDGES[1:]) / 2
    by = {(s.kind, s.term): s for s in stats}
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    for ax, kind, bounds in ((axes[0], "negative", NEG_IOU), (axes[1], "positive", POS_IOU)):
        for j, (k, term) in enumerate(t for t in TERMS if t[0] == kind):
            s = by[(k, term)]
            ax.errorbar(centres + 0.012 * (j - 1), s.means, yerr=s.stds, marker="o", ms=4, capsize=3,
                        label=f"{term} loss")
        ax.set_title(f"{kind}s, IoU {bounds[0]}–{bounds[1]}: loss per anchor", fontsize=9)
        ax.set_xlabel("MOB of the GT")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    width = 0.04
    for j, kind in enumerate(("negative", "positive")):
        axes[2].bar(centres + width * (j - 0.5), by[(kind, "cls")].counts, width=width, label=f"{kind}s")
    axes[2].set_title("anchors per MOB bin", fontsize=9)
    axes[2].set_xlabel("MOB of the GT")
    axes[2].legend(fontsize=8)
    fig.suptitle(title or "Loss terms by MOB (mean ± std per bin)", fontsize=10)
    return Path(save_figure(fig, path))


def write_loss_by_mob(stats: list[BinStats], out_dir: Path, title: str = "") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_csv(stats, out_dir / "loss_by_mob.csv"), plot_loss_by_mob(stats, out_dir / "loss_by_mob.png", title)]


def summary_metrics(stats: list[BinStats]) -> dict[str, float]:
    """Flat numbers for MLflow: per (kind, term) the anchor count and the mean over all its anchors."""
    out = {}
    for s in stats:
        n = int(s.counts.sum())
        out[f"loss_by_mob/{s.kind}_{s.term}_count"] = n
        if n:
            out[f"loss_by_mob/{s.kind}_{s.term}_mean"] = float(np.nansum(s.means * s.counts) / n)
    return out
