"""Cropped prototype-resolution masks pasted into the original image, box by box.

The reference (official YOLACT `postprocess`, mmdet's `YOLACTProtonet.get_seg_masks`, and ours
before) resizes every cropped soft mask to the whole h×w image with `F.interpolate(bilinear,
align_corners=False)` and thresholds it. A cropped mask is exactly 0 outside its crop region, so
an output pixel whose bilinear support (two source rows × two source columns) lies outside the
region is exactly 0 and never passes a threshold ≥ 0. `paste_masks` therefore evaluates the same
interpolation — the same source coordinate `(x + 0.5) · in/out − 0.5`, edge clamping and bilinear
weights, through `grid_sample` — only on each mask's output window, and leaves the rest of the
image false. Windows of similar size are sampled together (`PASTE_CHUNK` masks padded to the
chunk's largest window) to keep the op count low; a chunk whose windows reach half the image
is resized whole, as the reference does. The two kernels round the weights differently,
so a pixel within float rounding of the threshold may differ (none in the benchmark's 100 masks;
≈ 1.5e-7 of the pixels of the tests' masks, built to sit at the threshold; the tests allow 0.01 %).

mmdet's `_do_paste_mask` (Mask R-CNN's paste, also grid_sample per chunk of boxes) maps each box,
not the whole image, onto a 28×28 RoI mask: other source coordinates, other masks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PASTE_CHUNK = 16  # masks per evaluation: fewer ops than one by one, little padding once sorted by size
FULL_IMAGE_SHARE = 0.5  # a chunk whose windows reach half the image is resized whole: cheaper, and exact
WINDOW_MARGIN = 1  # output pixels added on each side: float rounding of the inverse map cannot clip a mask


def crop_bounds(boxes: torch.Tensor, height: int, width: int, padding: float) -> torch.Tensor:
    """Integer half-open bounds [N, 4] (c0, r0, c1, r1) of `masks.crop_region(boxes, …)`: column c is
    inside when x1 − padding ≤ c < x2 + padding, i.e. ceil(x1 − padding) ≤ c < ceil(x2 + padding)."""
    x1 = torch.minimum(boxes[:, 0], boxes[:, 2]) - padding  # [N]
    x2 = torch.maximum(boxes[:, 0], boxes[:, 2]) + padding
    y1 = torch.minimum(boxes[:, 1], boxes[:, 3]) - padding
    y2 = torch.maximum(boxes[:, 1], boxes[:, 3]) + padding
    cols = torch.stack((x1, x2), 1).ceil().clamp(0, width)  # [N, 2]
    rows = torch.stack((y1, y2), 1).ceil().clamp(0, height)
    return torch.stack((cols[:, 0], rows[:, 0], cols[:, 1], rows[:, 1]), 1).long()  # [N, 4]


def _out_window(lo: torch.Tensor, hi: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """Output pixels [N, 2] (start, end) whose bilinear support meets source pixels [lo, hi).

    Source coordinate s(x) = scale·(x + 0.5) − 0.5 reads pixels floor(s) and floor(s) + 1, so x
    matters when lo − 1 < s(x) < hi, i.e. (lo − 0.5)/scale − 0.5 < x < (hi + 0.5)/scale − 0.5."""
    inv = out_size / in_size
    start = ((lo - 0.5) * inv - 0.5).floor() - WINDOW_MARGIN
    end = ((hi + 0.5) * inv - 0.5).ceil() + 1 + WINDOW_MARGIN
    start, end = start.clamp(0, out_size), end.clamp(0, out_size)
    end = torch.where(hi > lo, end, start)  # an empty region pastes nothing
    return torch.stack((start, end), 1).long()


def _resample(soft: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, hw: int, ww: int,
              size: tuple[int, int]) -> torch.Tensor:
    """Bilinear values [n, hw, ww] of soft [n, Hp, Wp] resized to `size`, at rows y0 + 0..hw−1 and
    columns x0 + 0..ww−1 (rows and columns past the image repeat its last one; never pasted).

    `grid_sample(align_corners=False)` reads normalised g at source ((g + 1)·Hp − 1) / 2; for the
    output pixel centre g = (2y + 1)/h − 1 that is (y + 0.5)·Hp/h − 0.5, `F.interpolate`'s source
    coordinate, and the border padding repeats the edge as its clamping does.
    """
    n = soft.shape[0]
    h, w = size
    ar_y = torch.arange(hw, device=soft.device)
    ar_x = torch.arange(ww, device=soft.device)
    gy = (2 * (y0[:, None] + ar_y).clamp(max=h - 1) + 1) / h - 1  # [n, hw]
    gx = (2 * (x0[:, None] + ar_x).clamp(max=w - 1) + 1) / w - 1  # [n, ww]
    grid = torch.stack((gx[:, None, :].expand(n, hw, ww), gy[:, :, None].expand(n, hw, ww)), 3)  # [n, hw, ww, 2]
    return F.grid_sample(soft[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]


def paste_masks(soft: torch.Tensor, bounds: torch.Tensor, size: tuple[int, int], threshold: float,
                chunk: int = PASTE_CHUNK) -> torch.Tensor:
    """Bool masks [N, h, w]: `F.interpolate(soft, size, bilinear) > threshold` for soft masks
    [N, Hp, Wp] that are 0 outside their crop `bounds` [N, 4] (c0, r0, c1, r1), in proto pixels."""
    N, Hp, Wp = soft.shape
    h, w = size
    if threshold < 0:
        raise ValueError(f"paste_masks needs a threshold >= 0 (outside the windows is 0), got {threshold}")
    out = torch.zeros((N, h, w), dtype=torch.bool, device=soft.device)
    if N == 0:
        return out
    win = torch.cat((_out_window(bounds[:, 1], bounds[:, 3], Hp, h),
                     _out_window(bounds[:, 0], bounds[:, 2], Wp, w)), 1)  # [N, 4] y0, y1, x0, x1
    rows = win.tolist()  # the one transfer per image: window sizes are shapes
    order = sorted(range(N), key=lambda i: (rows[i][1] - rows[i][0]) * (rows[i][3] - rows[i][2]))
    for s in range(0, N, chunk):
        ids = order[s:s + chunk]
        hw = max(rows[i][1] - rows[i][0] for i in ids)
        ww = max(rows[i][3] - rows[i][2] for i in ids)
        if hw == 0 or ww == 0:
            continue
        sel = torch.tensor(ids, device=soft.device)
        if hw * ww >= FULL_IMAGE_SHARE * h * w:  # the reference itself (its kernel is faster per pixel)
            whole = F.interpolate(soft[sel][:, None], size=size, mode="bilinear", align_corners=False)  # [n, 1, h, w]
            out[sel] = whole[:, 0] > threshold
            continue
        vals = _resample(soft[sel], win[sel, 0], win[sel, 2], hw, ww, size) > threshold  # [n, hw, ww]
        for j, i in enumerate(ids):
            y0, y1, x0, x1 = rows[i]
            out[i, y0:y1, x0:x1] = vals[j, :y1 - y0, :x1 - x0]
    return out
