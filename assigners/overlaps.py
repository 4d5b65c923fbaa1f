"""Overlaps between ground truths and anchors: IoU, GIoU, DIoU, maIoU, GmaIoU (SPEC §2).

Every function takes `gt_boxes` float [G, 4] and `anchors` either float [A, 4] (dense: every GT
against every anchor -> [G, A]) or float [G, K, 4] (per GT, its own K anchors -> [G, K]; what
ATSS uses to evaluate only its candidates). Boxes are xyxy, continuous pixels, no +1.

Box arithmetic follows mmdetection 2.x `bbox_overlaps` (the official code's): areas are the
continuous, unclipped box areas and the union is floored at `EPS`.

The mask-aware overlaps take `integral`: a `MaskIntegrals` or a full int [G, H+1, W+1]
integral image. |A∩M| is counted as the official maIoU code counts it (corners rounded half to
even, clamped to the image, half-open pixel rectangle); they are evaluated only where the box
IoU is > 0 and are exactly 0 elsewhere. A GT with an empty mask gets 0 everywhere (the official
code gives NaN there); `mask_present()` tells the assigners which GTs those are.
"""
from __future__ import annotations

import torch
from torch import Tensor

from assigners.contract import check_boxes, check_integral
from assigners.integrals import MaskIntegrals

EPS = 1e-6  # floor of unions and enclosing areas, and the official MOB's box-area guard


def _pairs(gt_boxes: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
    """Validate, and broadcast to gt [G, 1, 4] against anchors [1 or G, K, 4]."""
    check_boxes("gt_boxes", gt_boxes)
    if isinstance(anchors, Tensor) and anchors.dim() == 3:
        check_boxes("anchors", anchors, like=gt_boxes, per_gt=True)
        if anchors.shape[0] != gt_boxes.shape[0]:
            raise ValueError(f"per-GT anchors must be [G={gt_boxes.shape[0]}, K, 4], got shape "
                             f"{tuple(anchors.shape)}")
        return gt_boxes[:, None, :], anchors  # [G, 1, 4], [G, K, 4]
    check_boxes("anchors", anchors, like=gt_boxes)
    return gt_boxes[:, None, :], anchors[None]  # [G, 1, 4], [1, A, 4]


def _area(b: Tensor) -> Tensor:
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def _iou_terms(gt: Tensor, anc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """-> (inter, union, iou), each [G, K]."""
    lt = torch.maximum(gt[..., :2], anc[..., :2])  # [G, K, 2]
    rb = torch.minimum(gt[..., 2:], anc[..., 2:])  # [G, K, 2]
    wh = (rb - lt).clamp(min=0)  # [G, K, 2]
    inter = wh[..., 0] * wh[..., 1]  # [G, K]
    union = (_area(gt) + _area(anc) - inter).clamp(min=EPS)  # [G, K]
    return inter, union, inter / union


def _enclosing_wh(gt: Tensor, anc: Tensor) -> Tensor:
    lt = torch.minimum(gt[..., :2], anc[..., :2])  # [G, K, 2]
    rb = torch.maximum(gt[..., 2:], anc[..., 2:])  # [G, K, 2]
    return (rb - lt).clamp(min=0)  # [G, K, 2]


def box_iou(gt_boxes: Tensor, anchors: Tensor) -> Tensor:
    """IoU = |A∩B| / |A∪B| -> [G, A] (or [G, K])."""
    gt, anc = _pairs(gt_boxes, anchors)
    return _iou_terms(gt, anc)[2]


def box_giou(gt_boxes: Tensor, anchors: Tensor) -> Tensor:
    """GIoU = IoU − (|C| − |A∪B|) / |C|, C the smallest enclosing box (area floored at EPS)."""
    gt, anc = _pairs(gt_boxes, anchors)
    _, union, iou = _iou_terms(gt, anc)
    wh = _enclosing_wh(gt, anc)  # [G, K, 2]
    enclose = (wh[..., 0] * wh[..., 1]).clamp(min=EPS)  # [G, K]
    return iou - (enclose - union) / enclose


def box_diou(gt_boxes: Tensor, anchors: Tensor) -> Tensor:
    """DIoU = IoU − ρ²/c²: ρ the centre distance, c the enclosing box diagonal (c² floored at EPS)."""
    gt, anc = _pairs(gt_boxes, anchors)
    iou = _iou_terms(gt, anc)[2]
    wh = _enclosing_wh(gt, anc)  # [G, K, 2]
    diag2 = (wh[..., 0] ** 2 + wh[..., 1] ** 2).clamp(min=EPS)  # [G, K]
    d = (anc[..., :2] + anc[..., 2:]) / 2 - (gt[..., :2] + gt[..., 2:]) / 2  # [G, K, 2]
    rho2 = d[..., 0] ** 2 + d[..., 1] ** 2  # [G, K]
    return iou - rho2 / diag2


def _mask_terms(gt_boxes: Tensor, anchors: Tensor, integral: MaskIntegrals | Tensor):
    """-> (gt [G,1,4], anc, iou [G,K], |A∩M| [G,K], |M| [G], mask present [G]), areas in query units."""
    gt, anc = _pairs(gt_boxes, anchors)
    mi = check_integral(integral, gt_boxes)
    _, union, iou = _iou_terms(gt, anc)
    scale = mi.area_scale()  # integral-frame pixels per query-frame unit area (1 without affine)
    cnt = mi.count(anc.expand(gt.shape[0], -1, -1)).to(gt_boxes.dtype) / scale  # [G, K]
    mask_area = mi.areas().to(gt_boxes.dtype) / scale  # [G]
    return anc, union, iou, cnt, mask_area, mask_area > 0


def mob_ratio(gt_boxes: Tensor, integral: MaskIntegrals | Tensor) -> Tensor:
    """MOB = |M| / |B| -> [G], with the official guard |B| + EPS (0 for an empty mask)."""
    check_boxes("gt_boxes", gt_boxes)
    mi = check_integral(integral, gt_boxes)
    return mi.areas().to(gt_boxes.dtype) / mi.area_scale() / (_area(gt_boxes) + EPS)


def mask_aware_iou(gt_boxes: Tensor, anchors: Tensor, integral: MaskIntegrals | Tensor) -> Tensor:
    """maIoU (GmaIoU, P = B) = |A∩M| / (MOB · |A∪B|) -> [G, A] (or [G, K]).

    Same float operation order as the official code: MOB = |M| / (|B| + EPS), then
    (|A∩M| / MOB) / |A∪B|.
    """
    _, union, iou, cnt, mask_area, present = _mask_terms(gt_boxes, anchors, integral)
    mob = mask_area / (_area(gt_boxes) + EPS)  # [G]
    mob = torch.where(present, mob, torch.ones_like(mob))  # an empty mask must not give 0/0
    maiou = cnt / mob[:, None] / union  # [G, K]
    return torch.where((iou > 0) & present[:, None], maiou, torch.zeros_like(maiou))


def mask_box_iou(gt_boxes: Tensor, anchors: Tensor, integral: MaskIntegrals | Tensor) -> Tensor:
    """GmaIoU with P = M: |A∩M| / (|A| + |M| − |A∩M|), union floored at EPS -> [G, A] (or [G, K]).

    |A| is the continuous, unclipped anchor area (as in maIoU's union); zero where box IoU is 0.
    """
    anc, _, iou, cnt, mask_area, present = _mask_terms(gt_boxes, anchors, integral)
    union = (_area(anc) + mask_area[:, None] - cnt).clamp(min=EPS)  # [G, K]
    gma = cnt / union
    return torch.where((iou > 0) & present[:, None], gma, torch.zeros_like(gma))


def mask_present(integral: MaskIntegrals | Tensor, gt_boxes: Tensor) -> Tensor:
    """bool [G]: the GT has at least one (counted) mask pixel; mask-aware ATSS skips the others."""
    return check_integral(integral, gt_boxes).areas() > 0
