"""Figures as PNG files, drawn with matplotlib's object API on the Agg canvas (no pyplot, no
global backend switch, safe in workers and without a display).

- `plot_mob_distribution`: the ground truths' mask-over-box ratios (paper Fig. 3a);
- `plot_iou_vs_maiou`: joint histogram of anchors' IoU and maIoU with their GTs (Fig. 3c).
Each takes plain arrays and a path, and returns the path; the sweep report reuses them.
"""
from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

MOB_BIN_WIDTH = 0.05
JOINT_BINS = 50
DPI = 120


def save_figure(fig: Figure, path):
    """Render `fig` to the PNG at `path` (str or Path; parents created) and return `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def plot_mob_distribution(mob, path: str, labels=None, names: list[str] | None = None,
                          title: str = "Mask-over-box ratio of the ground truths") -> str:
    """Histogram of MOB values (fraction of GTs per bin), stacked by category when `labels` given."""
    mob = np.asarray(mob, dtype=np.float64)
    bins = np.arange(0.0, 1.0 + MOB_BIN_WIDTH / 2, MOB_BIN_WIDTH)
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    n = max(len(mob), 1)
    clipped = np.clip(mob, 0.0, 1.0)  # a mask reaching past its box can exceed 1
    if labels is not None and len(mob):
        labels = np.asarray(labels)
        groups = sorted(set(labels.tolist()))
        data = [clipped[labels == g] for g in groups]
        weights = [np.full(len(d), 1.0 / n) for d in data]
        legend = [names[g] if names else str(g) for g in groups]
        ax.hist(data, bins=bins, weights=weights, stacked=True, label=legend)
        ax.legend(title="category", fontsize="small")
    else:
        ax.hist(clipped, bins=bins, weights=np.full(len(mob), 1.0 / n), color="tab:blue")
    below = float((mob < 0.5).mean()) if len(mob) else 0.0
    ax.axvline(0.5, color="k", linestyle="--", linewidth=1)
    ax.text(0.02, 0.97, f"{below:.0%} below 0.5 (dashed)", transform=ax.transAxes, ha="left", va="top")
    ax.set_xlim(0, 1)
    ax.set_xlabel("MOB ratio  |M| / |B|")
    ax.set_ylabel("fraction of ground truths")
    ax.set_title(f"{title} (n = {len(mob)})")
    return save_figure(fig, path)


def plot_iou_vs_maiou(iou, maiou, path: str, title: str = "Anchors: IoU vs maIoU with their GT") -> str:
    """2-D histogram (log colour scale) of (IoU, maIoU) pairs, with the diagonal."""
    iou = np.asarray(iou, dtype=np.float64)
    maiou = np.asarray(maiou, dtype=np.float64)
    if iou.shape != maiou.shape:
        raise ValueError(f"iou and maiou must have the same shape, got {iou.shape} and {maiou.shape}")
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.add_subplot()
    edges = np.linspace(0.0, 1.0, JOINT_BINS + 1)
    counts, _, _ = np.histogram2d(iou, np.clip(maiou, 0.0, 1.0), bins=[edges, edges])
    if counts.any():
        mesh = ax.pcolormesh(edges, edges, counts.T, norm=LogNorm(vmin=1, vmax=counts.max()), cmap="viridis")
        fig.colorbar(mesh, ax=ax, label="anchor-GT pairs")
    ax.plot([0, 1], [0, 1], color="w", linestyle="--", linewidth=1)
    above = float((maiou > iou).mean()) if len(iou) else 0.0
    ax.set_xlabel("IoU")
    ax.set_ylabel("maIoU")
    ax.set_title(f"{title}\n{len(iou)} pairs with IoU > 0; maIoU > IoU for {above:.0%}", fontsize="medium")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    return save_figure(fig, path)
