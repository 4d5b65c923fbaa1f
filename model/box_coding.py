"""Box coding and box overlaps (plain torch; boxes are xyxy absolute pixels everywhere else).

Deltas (mmdet `DeltaXYWHBBoxCoder`, stds (0.1, 0.1, 0.2, 0.2), no +1):
dx = (gx − ax) / aw / 0.1, dy = (gy − ay) / ah / 0.1, dw = log(gw / aw) / 0.2, dh = log(gh / ah) / 0.2,
with (x, y) box centres and (w, h) sizes. Decoding clamps dw, dh to ±log(1000/16) as mmdet does, so an
untrained head cannot overflow `exp`.
"""
from __future__ import annotations

import math

import torch

BOX_STDS = (0.1, 0.1, 0.2, 0.2)
MAX_LOG_RATIO = abs(math.log(16 / 1000))


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(gt: torch.Tensor, anchors: torch.Tensor, stds=BOX_STDS) -> torch.Tensor:
    """gt [..., 4], anchors [..., 4] (same shape) -> deltas [..., 4]."""
    gx, gy, gw, gh = _centre_size(gt)
    ax, ay, aw, ah = _centre_size(anchors)
    d = torch.stack(((gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)), dim=-1)
    return d / d.new_tensor(stds)


def decode(deltas: torch.Tensor, anchors: torch.Tensor, stds=BOX_STDS) -> torch.Tensor:
    """deltas [..., 4], anchors [..., 4] (broadcastable) -> boxes [..., 4] xyxy."""
    d = deltas * deltas.new_tensor(stds)
    ax, ay, aw, ah = _centre_size(anchors)
    dw = d[..., 2].clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    dh = d[..., 3].clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    x, y = ax + d[..., 0] * aw, ay + d[..., 1] * ah
    w, h = aw * dw.exp(), ah * dh.exp()
    return torch.stack((x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h), dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pairwise IoU: a [..., N, 4], b [..., M, 4] -> [..., N, M]; union clamped at eps (no NaN)."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])  # [..., N, M, 2]
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])  # [..., N, M, 2]
    wh = (rb - lt).clamp(min=0)  # [..., N, M, 2]
    inter = wh[..., 0] * wh[..., 1]  # [..., N, M]
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter  # [..., N, M]
    return inter / union.clamp(min=eps)


def box_iou_aligned(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """IoU of corresponding rows: a [N, 4], b [N, 4] -> [N]."""
    lt = torch.maximum(a[..., :2], b[..., :2])  # [N, 2]
    rb = torch.minimum(a[..., 2:], b[..., 2:])  # [N, 2]
    wh = (rb - lt).clamp(min=0)  # [N, 2]
    inter = wh[..., 0] * wh[..., 1]
    return inter / (box_area(a) + box_area(b) - inter).clamp(min=eps)
