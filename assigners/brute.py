"""maIoU without integral images: every anchor's pixels counted in the masks, one anchor at a time.

This is the paper's slow baseline (maIoU Table 3: "brute force" vs integral images). It returns
the same values as `overlaps.mask_aware_iou` bit for bit — same rounding of the anchor corners
(half to even, clamped to the image, half-open rectangle), same float operation order — and so
serves benchmarks that time the two ways side by side. `assign_atss_brute` is ATSS w. maIoU on
those values, registered as "atss_maiou_brute" so that a run can train with it (maIoU Table 3's
iteration time; benchmark only): it is O(A·G·h·w) and converts every anchor to Python ints.
"""
from __future__ import annotations

import torch
from torch import Tensor

from collections.abc import Sequence

from assigners.atss import atss_assign, atss_candidates
from assigners.contract import check_assign_inputs, check_boxes
from assigners.overlaps import EPS, _iou_terms


def brute_mask_aware_iou(gt_boxes: Tensor, gt_masks: Tensor, anchors: Tensor) -> Tensor:
    """maIoU [G, A] of `gt_boxes` float [G, 4] with masks bool [G, H, W] against anchors float [A, 4]."""
    check_boxes("gt_boxes", gt_boxes)
    check_boxes("anchors", anchors)
    h, w = gt_masks.shape[1:]
    pixels = gt_masks.view(torch.uint8)  # summing bytes is faster than summing bools
    counts = torch.zeros((gt_boxes.shape[0], anchors.shape[0]), dtype=gt_boxes.dtype,
                         device=gt_boxes.device)  # [G, A]
    for a, (x1, y1, x2, y2) in enumerate(torch.round(anchors).long().tolist()):
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if x2 > x1 and y2 > y1:
            counts[:, a] = pixels[:, y1:y2, x1:x2].sum((1, 2), dtype=torch.int32).to(counts.dtype)
    inter, union, area_gt, _ = _iou_terms(gt_boxes[:, None], anchors[None])  # [G, A], [G, A], [G, 1]
    mask_area = gt_masks.flatten(1).sum(1).to(gt_boxes.dtype)[:, None]  # [G, 1]
    mob = (mask_area / (area_gt + EPS)).clamp_(min=torch.finfo(counts.dtype).tiny)  # [G, 1]
    return counts / mob / union * (inter / union > 0)  # [G, A]


@torch.no_grad()
def assign_atss_brute(gt_boxes: Tensor, gt_masks: Tensor | None, anchors: Tensor, num_anchors_per_level: Sequence[int],
                      integral: object = None) -> Tensor:
    """ATSS w. maIoU with the maIoU of every anchor counted by brute force, as the paper's baseline
    does (then the candidates' values are gathered). Needs `gt_masks`; `integral` is checked, not used."""
    check_assign_inputs(gt_boxes, gt_masks, anchors, num_anchors_per_level, integral, needs_masks=False)
    if gt_masks is None:
        raise ValueError("atss_maiou_brute counts mask pixels: give gt_masks [G, H, W]")
    if gt_boxes.shape[0] == 0:
        return atss_assign(gt_boxes, anchors, num_anchors_per_level, overlap=None)  # all BACKGROUND
    dense = brute_mask_aware_iou(gt_boxes, gt_masks, anchors)  # [G, A]
    cand = atss_candidates(gt_boxes, anchors, num_anchors_per_level)  # [G, C], as atss_assign picks them
    return atss_assign(gt_boxes, anchors, num_anchors_per_level, lambda gt, anc: dense.gather(1, cand),
                       gt_valid=gt_masks.flatten(1).any(1))
