"""Overlaps between ground truths and anchors: IoU, GIoU, DIoU, maIoU, GmaIoU (docs/design.md §5).

Every function takes `gt_boxes` float [G, 4] and `anchors` either float [A, 4] (dense: every GT
against every anchor -> [G, A]) or float [G, K, 4] (per GT, its own K anchors -> [G, K]; what
ATSS uses to evaluate only its candidates). Boxes are xyxy, continuous pixels, no +1.

Box arithmetic follows mmdetection 2.x `bbox_overlaps` (the official code's): areas are the
continuous, unclipped box areas and the union is floored at `EPS`.

The mask-aware overlaps take `integral`: a `MaskIntegrals` or a full int [G, H+1, W+1]
integral image. |A∩M| is counted as the official maIoU code counts it (corners rounded half to
even, clamped to the image, half-open pixel rectangle); they are evaluated only where the box
IoU is > 0 and are exactly 0 elsewhere. A GT with an empty mask gets 0 everywhere (the official
code gives NaN there, and so no ATSS positives; the mask-aware ATSS skips such GTs explicitly).
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
    wh = b[..., 2:] - b[..., :2]  # [..., 2]
    return wh[..., 0] * wh[..., 1]


def _iou_terms(gt: Tensor, anc: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> (|A∩B| [G, K], |A∪B| floored at EPS [G, K], |B| [G, 1], |A| [1|G, K])."""
    area_gt, area_anc = _area(gt), _area(anc)  # [G, 1], [1|G, K]
    lt = torch.maximum(gt[..., :2], anc[..., :2])  # [G, K, 2]
    rb = torch.minimum(gt[..., 2:], anc[..., 2:])  # [G, K, 2]
    wh = (rb - lt).clamp_(min=0)  # [G, K, 2]
    inter = wh[..., 0] * wh[..., 1]  # [G, K]
    union = (area_gt + area_anc - inter).clamp_(min=EPS)  # [G, K]
    return inter, union, area_gt, area_anc


def _enclosing_wh(gt: Tensor, anc: Tensor) -> Tensor:
    lt = torch.minimum(gt[..., :2], anc[..., :2])  # [G, K, 2]
    rb = torch.maximum(gt[..., 2:], anc[..., 2:])  # [G, K, 2]
    return (rb - lt).clamp(min=0)  # [G, K, 2]


def box_iou(gt_boxes: Tensor, anchors: Tensor) -> Tensor:
    """IoU = |A∩B| / |A∪B| -> [G, A] (or [G, K])."""
    gt, anc = _pairs(gt_boxes, anchors)
    inter, union, _, _ = _iou_terms(gt, anc)
    return inter / union


def box_giou(gt_boxes: Tensor, anchors: Tensor) -> Tensor:
    """GIoU = IoU − (|C| − |A∪B|) / |C|, C the smallest enclosing box (area floored at EPS)."""
    gt, anc = _pairs(gt_boxes, anchors)
    inter, union, _, _ = _iou_terms(gt, anc)
    wh = _enclosing_wh(gt, anc)  # [G, K, 2]
    enclose = (wh[..., 0] * wh[..., 1]).clamp(min=EPS)  # [G, K]
    return inter / union - (enclose - union) / enclose


def box_diou(gt_boxes: Tensor, anchors: Tensor) -> Tensor:
    """DIoU = IoU − ρ²/c²: ρ the centre distance, c the enclosing box diagonal (c² floored at EPS)."""
    gt, anc = _pairs(gt_boxes, anchors)
    inter, union, _, _ = _iou_terms(gt, anc)
    wh = _enclosing_wh(gt, anc)  # [G, K, 2]
    diag2 = (wh[..., 0] ** 2 + wh[..., 1] ** 2).clamp(min=EPS)  # [G, K]
    d = (anc[..., :2] + anc[..., 2:]) / 2 - (gt[..., :2] + gt[..., 2:]) / 2  # [G, K, 2]
    rho2 = d[..., 0] ** 2 + d[..., 1] ** 2  # [G, K]
    return inter / union - rho2 / diag2


def _mask_terms(gt_boxes: Tensor, anchors: Tensor, integral: MaskIntegrals | Tensor):
    """Everything the mask-aware overlaps share, areas in the query frame's units:
    |B| [G, 1], |A| [1|G, K], |A∪B| [G, K], box IoU > 0 [G, K], |A∩M| [G, K], |M| [G, 1]."""
    gt, anc = _pairs(gt_boxes, anchors)
    mi = check_integral(integral, gt_boxes)
    inter, union, area_gt, area_anc = _iou_terms(gt, anc)
    overlapping = inter / union > 0  # [G, K]: the official gate, box IoU > 0
    if anchors.dim() == 2:
        # Dense: count only the overlapping pairs (few per GT; the rest is gated to 0 anyway).
        gi, ai = overlapping.nonzero(as_tuple=True)  # [P] each
        cnt = torch.zeros(overlapping.shape, dtype=gt_boxes.dtype, device=gt_boxes.device)  # [G, A]
        cnt[gi, ai] = mi.count_pairs_as(gi, anchors[ai], gt_boxes.dtype)
    else:  # per-GT candidates: all of them, without a host sync
        cnt = mi.count_as(anc, gt_boxes.dtype)  # [G, K]
    mask_area = mi.areas().to(gt_boxes.dtype)[:, None]  # [G, 1]
    if mi.affine is not None:  # counts are pixels of the integrals' frame: make them query areas
        scale = mi.area_scale()  # [] or per instance [G]
        scale = scale[:, None] if scale.dim() else scale
        cnt, mask_area = cnt / scale, mask_area / scale
    return area_gt, area_anc, union, overlapping, cnt, mask_area


def mob_ratio(gt_boxes: Tensor, integral: MaskIntegrals | Tensor) -> Tensor:
    """MOB = |M| / |B| -> [G], with the official guard |B| + EPS (0 for an empty mask)."""
    check_boxes("gt_boxes", gt_boxes)
    mi = check_integral(integral, gt_boxes)
    mask_area = mi.areas().to(gt_boxes.dtype)
    if mi.affine is not None:
        mask_area = mask_area / mi.area_scale()
    return mask_area / (_area(gt_boxes) + EPS)


def mask_aware_iou(gt_boxes: Tensor, anchors: Tensor, integral: MaskIntegrals | Tensor) -> Tensor:
    """maIoU (GmaIoU, P = B) = |A∩M| / (MOB · |A∪B|) -> [G, A] (or [G, K]).

    Same float operation order as the official code: MOB = |M| / (|B| + EPS), then
    (|A∩M| / MOB) / |A∪B|.
    """
    area_gt, _, union, overlapping, cnt, mask_area = _mask_terms(gt_boxes, anchors, integral)
    # An empty mask has MOB 0 and only zero counts: flooring MOB at the smallest normal float
    # turns its 0/0 into 0 and leaves every real MOB (>= 1 / |B|) untouched.
    mob = (mask_area / (area_gt + EPS)).clamp_(min=torch.finfo(cnt.dtype).tiny)  # [G, 1]
    return cnt / mob / union * overlapping  # [G, K]; exactly 0 where the boxes do not overlap


def mask_box_iou(gt_boxes: Tensor, anchors: Tensor, integral: MaskIntegrals | Tensor) -> Tensor:
    """GmaIoU with P = M: |A∩M| / (|A| + |M| − |A∩M|), union floored at EPS -> [G, A] (or [G, K]).

    |A| is the continuous, unclipped anchor area (as in maIoU's union); zero where box IoU is 0.
    An empty mask gives 0 (no count, no NaN).
    """
    _, area_anc, _, overlapping, cnt, mask_area = _mask_terms(gt_boxes, anchors, integral)
    return cnt / (area_anc + mask_area - cnt).clamp_(min=EPS) * overlapping  # [G, K]
