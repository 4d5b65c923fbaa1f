"""Cropped prototype-resolution masks pasted into the original image, box by box.

The reference (official YOLACT `postprocess`, mmdet's `YOLACTProtonet.get_seg_masks`, and ours
before) resizes every cropped soft mask to the whole h×w image with `F.interpolate(bilinear,
align_corners=False)` and thresholds it. A cropped mask is exactly 0 outside its crop region, so
an output pixel whose bilinear support (two source rows × two source columns) lies outside the
region is exactly 0 and never passes a threshold ≥ 0. `paste_masks` therefore evaluates the same
interpolation — the same source coordinate `scale · (x + 0.5) − 0.5` clamped at 0, the same
weights, columns first then rows as PyTorch's CPU kernel sums them — only on each mask's output
window, and leaves the rest of the image false. Windows of similar size are evaluated together
(`PASTE_CHUNK` masks padded to the chunk's largest window) to keep the op count low.

This is not mmdet's `_do_paste_mask` (Mask R-CNN's grid_sample of a 28×28 RoI mask onto its box):
that maps the box, not the whole image, onto the source and would change the masks.
"""
from __future__ import annotations

import torch

PASTE_CHUNK = 16  # masks per evaluation: fewer ops than one by one, little padding once sorted by size
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


def _weights(start: torch.Tensor, length: int, in_size: int, out_size: int):
    """Interpolation weights [n, length, span] of output pixels start + 0..length−1 over source pixels
    first + 0..span−1, and first [n]: at most two non-zeros per row, the weights and source pixels
    `F.interpolate(bilinear, align_corners=False)` uses on CPU (float32 throughout)."""
    scale = torch.tensor(in_size, dtype=torch.float32, device=start.device) / out_size  # float32, as PyTorch
    x = (start[:, None] + torch.arange(length, device=start.device)).clamp(max=out_size - 1)  # [n, L]
    src = (scale * (x.float() + 0.5) - 0.5).clamp(min=0)  # [n, L]
    i0 = src.long()  # floor: src ≥ 0
    lam = (src - i0).clamp(0, 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    first = i0[:, :1]  # [n, 1]
    span = int(in_size / out_size * (length - 1)) + 3  # ≥ i1[:, -1] − i0[:, 0] + 1
    wts = torch.zeros((start.shape[0], length, span), device=start.device)
    wts.scatter_add_(2, (i0 - first)[..., None], (1 - lam)[..., None])
    wts.scatter_add_(2, (i1 - first)[..., None], lam[..., None])
    return wts, first[:, 0]


def _resample(soft: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, hw: int, ww: int,
              size: tuple[int, int]) -> torch.Tensor:
    """Bilinear values [n, hw, ww] of soft [n, Hp, Wp] resized to `size`, at rows y0 + 0..hw−1 and
    columns x0 + 0..ww−1: the source rectangle each window reads, times the column weights, then
    the row weights (the two non-zero terms of each sum are those of PyTorch's kernel)."""
    n, Hp, Wp = soft.shape
    wy, fy = _weights(y0, hw, Hp, size[0])  # [n, hw, ry], [n]
    wx, fx = _weights(x0, ww, Wp, size[1])  # [n, ww, rx]
    rows = (fy[:, None] + torch.arange(wy.shape[2], device=soft.device)).clamp(max=Hp - 1)  # [n, ry]
    cols = (fx[:, None] + torch.arange(wx.shape[2], device=soft.device)).clamp(max=Wp - 1)  # [n, rx]
    sub = soft[torch.arange(n, device=soft.device)[:, None, None], rows[:, :, None], cols[:, None, :]]  # [n, ry, rx]
    return wy @ (sub @ wx.transpose(1, 2))  # [n, hw, ww]


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
        vals = _resample(soft[sel], win[sel, 0], win[sel, 2], hw, ww, size) > threshold  # [n, hw, ww]
        for j, i in enumerate(ids):
            y0, y1, x0, x1 = rows[i]
            out[i, y0:y1, x0:x1] = vals[j, :y1 - y0, :x1 - x0]
    return out
