"""The report's PNG figures.

- `mask_ap.png`: mask AP per assigner (or model variant), one panel per scale, mean with the
  seeds' sample std as error bars, the best bar of each panel outlined.
- dataset figures (see `dataset_figures`): the MOB distribution of the ground truths, the IoU vs
  maIoU joint histogram of anchors, and a Fig.-1-style picture of validation images with the
  anchors positive under ATSS-IoU only and under ATSS-maIoU only.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.report import BEST_BY, Row  # noqa: E402

DPI = 120
BAR_COLOR, BEST_COLOR = "#8da0cb", "#fc8d62"


def plot_mask_ap(rows: list[Row], path: Path) -> Path | None:
    """Bars of mean mask AP per row, one panel per scale; None when no row has a mask AP."""
    scales = sorted({r.scale for r in rows if BEST_BY in r.mean})
    if not scales:
        return None
    fig, axes = plt.subplots(1, len(scales), figsize=(4.2 * len(scales), 3.6), squeeze=False,
                             sharey=True)
    for ax, scale in zip(axes[0], scales):
        panel = [r for r in rows if r.scale == scale and BEST_BY in r.mean]
        means = [r.mean[BEST_BY] for r in panel]
        errs = [r.std.get(BEST_BY, 0.0) for r in panel]
        colors = [BEST_COLOR if r.best else BAR_COLOR for r in panel]
        x = range(len(panel))
        ax.bar(x, means, yerr=errs, color=colors, capsize=3, edgecolor="black", linewidth=0.5)
        for i, m in zip(x, means):
            ax.text(i, m, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(x), [r.label for r in panel], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"scale {scale}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("mask AP")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def make_figures(record, rows: list[Row], out: Path) -> list[Path]:
    made = [plot_mask_ap(rows, out / "mask_ap.png")]
    return [p for p in made if p is not None]
