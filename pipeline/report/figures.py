"""The report's PNG figures (matplotlib's object API on the Agg canvas: no pyplot, no display).

- `mask_ap.png`       mask AP per assigner (or model variant), one panel per scale: the mean over
                      seeds with its 95 % bootstrap interval as error bars (the seed std where
                      no interval could be made), the significantly best bar of a scale in orange;
- `mob.png`           the mask-over-box ratio of the validation ground truths (paper Fig. 3a);
- `iou_vs_maiou.png`  joint histogram of IoU and maIoU over every (GT, ATSS anchor) pair with
                      IoU > 0 (Fig. 3c);
- `anchors.png`       a Fig.-1-style picture: validation images with the anchors positive under one
                      assigner only (red), under the other only (green), common positives as
                      yellow dots; the pair is `sweep.figure_assigners` (default: ATSS w. IoU vs
                      the grid's first mask-aware assigner, e.g. maIoU or GmaIoU).

The dataset figures use the sweep's largest scale at the evaluation geometry (resize to S×S, no
augmentation), the ATSS anchor grid the model lays on that input (`pipeline.report.anchor_grids`) and the
assigners themselves, over the first `MAX_IMAGES` validation images that have ground truths.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from assigners import ASSIGNERS, mob_ratio
from pipeline.config import ASSIGNER_TABLE, Config, SweepConfig
from pipeline.data.augment import MEAN, STD, AugmentParams
from pipeline.data.datasets import InstanceDataset, load_split
from pipeline.report.analysis import overlap_pairs
from pipeline.report.anchor_grids import input_anchors
from pipeline.report.plots import plot_iou_vs_maiou, plot_mob_distribution, save_figure
from pipeline.report.table import BEST_BY, Row
from pipeline.sweep.grid import baseline_row

BAR_COLOR, BEST_COLOR = "#8da0cb", "#fc8d62"
ONLY_A, ONLY_B, BOTH = "tab:red", "tab:green", "gold"
DEFAULT_FIGURE_PAIR = ("atss_iou", "atss_maiou")  # the maIoU paper's Fig. 1
MAX_IMAGES = 100  # validation images scanned for the dataset figures
CANDIDATES = 20  # of which the Fig.-1 picture shows those where the two assigners differ most


def plot_mask_ap(rows: list[Row], path: Path) -> Path | None:
    """Bars of mean mask AP per row, one panel per scale; None when no row has a mask AP."""
    scales = sorted({r.scale for r in rows if BEST_BY in r.mean})
    if not scales:
        return None
    fig = Figure(figsize=(4.2 * len(scales), 3.8))
    axes = fig.subplots(1, len(scales), squeeze=False, sharey=True)[0]
    for ax, scale in zip(axes, scales):
        panel = [r for r in rows if r.scale == scale and BEST_BY in r.mean]
        means = [r.mean[BEST_BY] for r in panel]
        x = np.arange(len(panel))
        ax.bar(x, means, yerr=_error_bars(panel), capsize=3,
               color=[BEST_COLOR if r.best else BAR_COLOR for r in panel], edgecolor="black", linewidth=0.5)
        for i, m in zip(x, means):
            ax.text(i, m / 2, f"{m:.1f}", ha="center", va="center", fontsize=8)  # clear of the error bar
        ax.set_xticks(x, [_tick(r) for r in panel], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"scale {scale}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("mask AP")
    with_ci = any(BEST_BY in r.spread for r in rows)
    fig.suptitle("error bars: 95 % bootstrap interval of each row (validation images"
                 + (", seeds)" if any(r.n > 1 for r in rows) else ")") if with_ci
                 else "no intervals: error bars are the seed std (none with 1 seed)", fontsize=8)
    return save_figure(fig, path)


def _tick(r: Row) -> str:
    """The row's label, with its paired difference from the baseline and its interval when known."""
    d = r.deltas.get(BEST_BY)
    if d is None or not np.isfinite(d.low):
        return r.label
    return f"{r.label}\nΔ {d.delta:+.1f} [{d.low:+.1f}, {d.high:+.1f}]"


def _error_bars(panel: list[Row]) -> np.ndarray:
    """[2, N] distances from each bar to the bottom and top of its interval (else ± seed std)."""
    lo, hi = [], []
    for r in panel:
        mean = r.mean[BEST_BY]
        low, high = r.spread.get(BEST_BY, (mean - r.std.get(BEST_BY, 0.0), mean + r.std.get(BEST_BY, 0.0)))
        lo.append(max(mean - low, 0.0))
        hi.append(max(high - mean, 0.0))
    return np.array([lo, hi])


@dataclass
class ImageAnchors:
    """One validation image at S×S with the positives of the two compared assigners a and b."""
    image: np.ndarray  # uint8 [S, S, 3]
    masks: np.ndarray  # bool [G, S, S]
    boxes: np.ndarray  # float32 [G, 4]
    anchors: np.ndarray  # float32 [A, 4]
    pos_a: np.ndarray  # bool [A]
    pos_b: np.ndarray  # bool [A]

    @property
    def differing(self) -> int:
        return int((self.pos_a != self.pos_b).sum())


def figure_pair(sw: SweepConfig) -> tuple[str, str]:
    """The two assigners the Fig.-1 picture compares: `sweep.figure_assigners`, or else the
    report's baseline assigner against the grid's first mask-aware one (ATSS w. IoU vs maIoU)."""
    if sw.figure_assigners:
        a, b = sw.figure_assigners
    else:
        names = sw.assigners
        a = baseline_row(sw) if baseline_row(sw) in ASSIGNER_TABLE else names[0]
        b = next((n for n in names if ASSIGNER_TABLE[n].needs_masks and n != a), DEFAULT_FIGURE_PAIR[1])
        a = a if ASSIGNER_TABLE[a].anchor_grid == ASSIGNER_TABLE[b].anchor_grid else DEFAULT_FIGURE_PAIR[0]
    if ASSIGNER_TABLE[a].anchor_grid != ASSIGNER_TABLE[b].anchor_grid:
        raise ValueError(f"sweep.figure_assigners {a}, {b} lay different anchor grids; pick two of one grid")
    return a, b


def scan_validation(cfg: Config, scale: int, max_images: int = MAX_IMAGES):
    """(MOB [N], labels [N], IoU [P], maIoU [P], candidate images, category names) over the first
    validation images with ground truths, at the evaluation geometry of `scale`; the candidate
    images carry the positives of the `figure_pair` assigners."""
    data = replace(cfg.data, scale=scale)
    params = AugmentParams(scale=scale, train=False, min_box_size=data.min_box_size)
    ds = InstanceDataset(load_split(data, "val"), params, "loader", keep_empty=False)
    pair = figure_pair(cfg.sweep)
    anchors, counts = input_anchors(ASSIGNER_TABLE[pair[0]].anchor_grid, scale)
    mobs, labels, ious, maious, images = [], [], [], [], []
    for index in range(min(len(ds), max_images)):
        item = ds[index]
        gt, integral = item["boxes"], item["integrals"]
        if len(gt) == 0:
            continue
        mobs.append(mob_ratio(gt, integral).numpy())
        labels.append(item["labels"].numpy())
        iou, maiou = overlap_pairs(gt, anchors, integral)
        ious.append(iou)
        maious.append(maiou)
        if len(images) < CANDIDATES:
            pos_a, pos_b = (ASSIGNERS[n](gt, item["masks"], anchors, counts, integral=integral) >= 0
                            for n in pair)  # [A] each
            image = item["image"].permute(1, 2, 0).numpy() * STD + MEAN  # [S, S, 3] RGB
            images.append(ImageAnchors(np.clip(image, 0, 255).astype(np.uint8), item["masks"].numpy(),
                                       gt.numpy(), anchors.numpy(), pos_a.numpy(), pos_b.numpy()))
    cat = lambda xs, dtype: np.concatenate(xs) if xs else np.zeros(0, dtype)  # noqa: E731
    return (cat(mobs, np.float64), cat(labels, np.int64), cat(ious, np.float64),
            cat(maious, np.float64), images, ds.category_names)


def plot_anchor_differences(images: list[ImageAnchors], path: Path, n: int,
                            pair: tuple[str, str] = ("atss_iou", "atss_maiou")) -> Path | None:
    """Fig.-1 style: the `n` images where the two assigners of `pair` disagree most."""
    shown = sorted(images, key=lambda im: -im.differing)[:n]
    if not shown:
        return None
    fig = Figure(figsize=(4.2 * len(shown), 4.6))
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    rng = np.random.default_rng(0)
    label_a, label_b = (ASSIGNER_TABLE[n].label for n in pair)
    for ax, im in zip(axes, shown):
        overlay = im.image.astype(np.float32)
        for mask in im.masks:  # each instance tinted with its own colour
            overlay[mask] = 0.55 * overlay[mask] + 0.45 * rng.integers(40, 255, 3)
        ax.imshow(overlay.astype(np.uint8))
        for x1, y1, x2, y2 in im.boxes:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="white", lw=1.2, ls="--"))
        for sel, color in ((im.pos_a & ~im.pos_b, ONLY_A), (im.pos_b & ~im.pos_a, ONLY_B)):
            for x1, y1, x2, y2 in im.anchors[sel]:
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=color, lw=1.4))
        both = im.anchors[im.pos_a & im.pos_b]
        ax.scatter((both[:, 0] + both[:, 2]) / 2, (both[:, 1] + both[:, 3]) / 2, s=10, c=BOTH)
        size = im.image.shape[0]
        ax.set_xlim(0, size)
        ax.set_ylim(size, 0)
        ax.set_axis_off()
        ax.set_title(f"{label_a} only: {int((im.pos_a & ~im.pos_b).sum())} (red), "
                     f"{label_b} only: {int((im.pos_b & ~im.pos_a).sum())} (green)", fontsize=8)
    fig.suptitle(f"Positive anchors of {label_a} vs {label_b} (yellow: both; dashed: GT boxes)", fontsize=10)
    return save_figure(fig, path)


def dataset_figures(cfg: Config, out: Path, n_images: int) -> list[Path]:
    scale = max(cfg.sweep.scales)
    mob, labels, iou, maiou, images, names = scan_validation(cfg, scale)
    made = [Path(plot_mob_distribution(mob, str(out / "mob.png"), labels=labels, names=names)),
            Path(plot_iou_vs_maiou(iou, maiou, str(out / "iou_vs_maiou.png"),
                                   title=f"ATSS anchors at {scale}: IoU vs maIoU with their GT"))]
    pair = figure_pair(cfg.sweep)
    return made + [p for p in [plot_anchor_differences(images, out / "anchors.png", n_images, pair)] if p]


def make_figures(record, rows: list[Row], out: Path) -> list[Path]:
    """All figures; the dataset ones are skipped, with a note, when the data cannot be read here
    (e.g. a report made on a machine without the sweep's dataset)."""
    cfg = record.base_config()
    made = [p for p in [plot_mask_ap(rows, out / "mask_ap.png")] if p]
    try:
        made += dataset_figures(cfg, out, cfg.sweep.report_images)
    except (OSError, ValueError) as e:
        print(f"report: dataset figures skipped ({e})")
    return made
