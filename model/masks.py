"""Mask assembly from prototypes and coefficients, box crops, GT masks at prototype resolution.

All boxes here are in prototype-pixel coordinates (input coordinates × Hp / S). Crop convention
(official YOLACT `crop`): pixel column c is inside box [x1, x2) padded by `padding` pixels when
x1 − padding ≤ c < x2 + padding (column indices, clamped to the map).
SipMask quadrants split the box at its centre (xc, yc): pixel (r, c) is left when c < xc, top when r < yc.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CROP_PADDING = 1  # proto pixels around the box (official)


def crop_region(boxes: torch.Tensor, height: int, width: int, padding: float = CROP_PADDING) -> torch.Tensor:
    """Boolean masks [N, H, W] that are true inside each padded box [N, 4]."""
    x1 = (torch.minimum(boxes[:, 0], boxes[:, 2]) - padding).clamp(min=0)  # [N]
    x2 = (torch.maximum(boxes[:, 0], boxes[:, 2]) + padding).clamp(max=width)
    y1 = (torch.minimum(boxes[:, 1], boxes[:, 3]) - padding).clamp(min=0)
    y2 = (torch.maximum(boxes[:, 1], boxes[:, 3]) + padding).clamp(max=height)
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype)  # [W]
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype)  # [H]
    in_cols = (cols >= x1[:, None]) & (cols < x2[:, None])  # [N, W]
    in_rows = (rows >= y1[:, None]) & (rows < y2[:, None])  # [N, H]
    return in_rows[:, :, None] & in_cols[:, None, :]  # [N, H, W]


def quadrant_index(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Quadrant of every pixel relative to each box centre: 0 TL, 1 TR, 2 BL, 3 BR; [N, H, W] int64."""
    xc = (boxes[:, 0] + boxes[:, 2]) / 2  # [N]
    yc = (boxes[:, 1] + boxes[:, 3]) / 2
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype)  # [W]
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype)  # [H]
    right = (cols >= xc[:, None]).long()  # [N, W]
    bottom = (rows >= yc[:, None]).long()  # [N, H]
    return 2 * bottom[:, :, None] + right[:, None, :]  # [N, H, W]


def mask_logits(proto: torch.Tensor, coef: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
    """Per-instance mask logits [N, H, W] from proto [k, H, W] and coef [N, k].

    With SipMask coefficients [N, 4, k] each pixel takes the logit of its box quadrant (`boxes` [N, 4]
    required): since the quadrants are disjoint, sigmoid of this equals the sum of the four
    quadrant-cropped masks sigmoid(P·c_q).
    """
    k, H, W = proto.shape
    if coef.dim() == 2:
        return torch.einsum("nk,khw->nhw", coef, proto.to(coef.dtype))
    if boxes is None:
        raise ValueError("SipMask coefficients [N, 4, k] need the boxes that define the quadrants")
    per_quadrant = torch.einsum("nqk,khw->nqhw", coef, proto.to(coef.dtype))  # [N, 4, H, W]
    q = quadrant_index(boxes, H, W)  # [N, H, W]
    return per_quadrant.gather(1, q[:, None]).squeeze(1)  # [N, H, W]


def resize_masks(masks: torch.Tensor, size: tuple[int, int], threshold: float = 0.5) -> torch.Tensor:
    """Bool masks [G, H, W] -> bool [G, h, w]: bilinear resize, then > threshold (GT at prototype size)."""
    if masks.shape[0] == 0:
        return torch.zeros((0, *size), dtype=torch.bool, device=masks.device)
    resized = F.interpolate(masks[:, None].float(), size=size, mode="bilinear", align_corners=False)  # [G,1,h,w]
    return resized[:, 0] > threshold
