"""Slow, obvious references for the assigner tests: rasterise each anchor and count pixels.

Nothing here uses integral images: every anchor is turned into its own pixel raster (corners
rounded half to even with Python's `round`, half-open), intersected with the mask, and summed.
"""
from __future__ import annotations

import torch

EPS = 1e-6


def raster(box: list[float], h: int, w: int) -> torch.Tensor:
    """bool [H, W]: pixels (r, c) with round(x1) <= c < round(x2) and round(y1) <= r < round(y2)."""
    x1, y1, x2, y2 = (round(float(v)) for v in box)  # Python's round is half to even too
    rows = torch.arange(h)
    cols = torch.arange(w)
    return ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]  # [H, W]


def brute_counts(masks: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """masks bool [G, H, W], anchors [A, 4] -> int64 [G, A] mask pixels inside each anchor."""
    masks = masks.cpu()
    g, h, w = masks.shape
    out = torch.zeros((g, anchors.shape[0]), dtype=torch.int64)
    for a, box in enumerate(anchors.cpu().tolist()):
        r = raster(box, h, w)
        out[:, a] = (masks & r).flatten(1).sum(1)
    return out


def brute_box_terms(gt_boxes: torch.Tensor, anchors: torch.Tensor):
    """Pairwise (|A∩B|, |A∪B| floored, |A|, |B|) in float32, one pair at a time -> each [G, A]."""
    gt_boxes, anchors = gt_boxes.cpu().float(), anchors.cpu().float()
    g, a = gt_boxes.shape[0], anchors.shape[0]
    inter = torch.zeros(g, a)
    union = torch.zeros(g, a)
    area_a = torch.zeros(g, a)
    area_b = torch.zeros(g, a)
    for i in range(g):
        bx1, by1, bx2, by2 = gt_boxes[i]
        for j in range(a):
            ax1, ay1, ax2, ay2 = anchors[j]
            iw = (torch.minimum(bx2, ax2) - torch.maximum(bx1, ax1)).clamp(min=0)
            ih = (torch.minimum(by2, ay2) - torch.maximum(by1, ay1)).clamp(min=0)
            inter[i, j] = iw * ih
            area_b[i, j] = (bx2 - bx1) * (by2 - by1)
            area_a[i, j] = (ax2 - ax1) * (ay2 - ay1)
            union[i, j] = (area_b[i, j] + area_a[i, j] - inter[i, j]).clamp(min=EPS)
    return inter, union, area_a, area_b


def brute_maiou(gt_boxes, masks, anchors):
    """maIoU the official way, pair by pair, from brute-force counts -> float32 [G, A]."""
    counts = brute_counts(masks, anchors).float()
    inter, union, _, area_b = brute_box_terms(gt_boxes, anchors)
    total = masks.cpu().flatten(1).sum(1).float()  # [G]
    out = torch.zeros_like(union)
    for i in range(out.shape[0]):
        if total[i] == 0:
            continue  # empty mask: no overlap (the official NaN)
        mob = total[i] / (area_b[i, 0] + EPS)
        for j in range(out.shape[1]):
            if inter[i, j] / union[i, j] > 0:
                out[i, j] = counts[i, j] / mob / union[i, j]
    return out


def brute_gmaiou(gt_boxes, masks, anchors):
    """GmaIoU with P = M, pair by pair, from brute-force counts -> float32 [G, A]."""
    counts = brute_counts(masks, anchors).float()
    inter, union, area_a, _ = brute_box_terms(gt_boxes, anchors)
    total = masks.cpu().flatten(1).sum(1).float()  # [G]
    out = torch.zeros_like(union)
    for i in range(out.shape[0]):
        if total[i] == 0:
            continue
        for j in range(out.shape[1]):
            if inter[i, j] / union[i, j] > 0:
                out[i, j] = counts[i, j] / (area_a[i, j] + total[i] - counts[i, j]).clamp(min=EPS)
    return out


def random_case(gen: torch.Generator, h: int, w: int, g: int, a: int, integer: bool = False,
                spill: bool = False):
    """A random image: gt boxes float32 [G, 4] inside the image, masks bool [G, H, W] inside their
    box (or spilling out of it with `spill`), anchors float32 [A, 4] anywhere around the image,
    with half-pixel corners common so that rounding matters."""
    def u(lo, hi, n):
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    x1, y1 = u(0, w - 1, g), u(0, h - 1, g)
    x2, y2 = x1 + u(0.5, w, g), y1 + u(0.5, h, g)
    gt = torch.stack([x1, y1, x2.clamp(max=w), y2.clamp(max=h)], 1)  # [G, 4]
    cx, cy = u(-4, w + 4, a), u(-4, h + 4, a)
    bw, bh = u(0.5, w, a), u(0.5, h, a)
    anchors = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)  # [A, 4]
    if integer:
        gt, anchors = gt.round(), anchors.round()
        gt[:, 2:] = torch.maximum(gt[:, 2:], gt[:, :2] + 1)
        anchors[:, 2:] = torch.maximum(anchors[:, 2:], anchors[:, :2] + 1)
    else:  # half-pixel corners on a third of the anchors
        half = torch.rand(a, generator=gen) < 1 / 3
        anchors[half] = (anchors[half] * 2).round() / 2
    rows, cols = torch.arange(h).float(), torch.arange(w).float()
    inside = (((rows + 0.5)[None, :, None] > gt[:, 1, None, None]) & ((rows + 0.5)[None, :, None] < gt[:, 3, None, None])
              & ((cols + 0.5)[None, None, :] > gt[:, 0, None, None]) & ((cols + 0.5)[None, None, :] < gt[:, 2, None, None]))
    masks = inside & (torch.rand(g, h, w, generator=gen) < 0.7)  # [G, H, W]
    if spill:
        masks |= torch.rand(g, h, w, generator=gen) < 0.05
    return gt, masks, anchors
