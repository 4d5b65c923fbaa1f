"""The fixed-IoU assigner of the YOLACT baseline (mmdetection MaxIoUAssigner, docs/design.md §6).

`fixed_iou_assign(overlaps [G, A]) -> int64 [A]`:
  1. every anchor starts as `IGNORE`;
  2. max overlap over GTs < `NEG_THR` -> `BACKGROUND`; >= `POS_THR` -> that GT (lowest index on
     ties); anchors in between stay `IGNORE`;
  3. then each GT in order forces its single best anchor (lowest index on ties) to itself, even
     at overlap 0 (official `min_pos_iou=0`); a later GT overwrites an earlier one.
No GT: all `BACKGROUND`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from assigners.contract import BACKGROUND, IGNORE, check_assign_inputs
from assigners.integrals import MaskIntegrals
from assigners.overlaps import box_iou

POS_THR = 0.5
NEG_THR = 0.4
NO_GT = -1  # "no forcing GT" while resolving step 3


def fixed_iou_assign(overlaps: Tensor, pos_thr: float = POS_THR, neg_thr: float = NEG_THR) -> Tensor:
    """overlaps [G, A] -> int64 [A] (GT index, BACKGROUND or IGNORE)."""
    g, a = overlaps.shape
    dev = overlaps.device
    if g == 0 or a == 0:
        return torch.full((a,), BACKGROUND, dtype=torch.int64, device=dev)
    best = overlaps.amax(0)  # [A]
    gt_index = torch.arange(g, device=dev)  # [G]
    best_gt = torch.where(overlaps == best, gt_index[:, None], g).amin(0)  # [A], lowest GT on ties
    forced = torch.full((a,), NO_GT, dtype=torch.int64, device=dev)
    forced.scatter_reduce_(0, best_anchor_per_gt(overlaps), gt_index, reduce="amax")  # later GT wins
    return resolve_fixed_iou(best, best_gt, forced, pos_thr, neg_thr)


def best_anchor_per_gt(overlaps: Tensor) -> Tensor:
    """overlaps [G, A] -> int64 [G]: each GT's highest-overlap anchor, the lowest index on ties."""
    return overlaps.argmax(1)  # [G]; argmax returns the first maximal index (documented)


def resolve_fixed_iou(best: Tensor, best_gt: Tensor, forced: Tensor, pos_thr: float = POS_THR,
                      neg_thr: float = NEG_THR) -> Tensor:
    """Steps 1–3 from each anchor's best overlap and GT and its forcing GT (`NO_GT`: none)."""
    matched = torch.full_like(best_gt, IGNORE)
    matched = torch.where(best < neg_thr, BACKGROUND, matched)
    matched = torch.where(best >= pos_thr, best_gt, matched)
    return torch.where(forced != NO_GT, forced, matched)


@torch.no_grad()  # an assignment is not differentiable
def assign_fixed_iou(gt_boxes: Tensor, gt_masks: Tensor | None, anchors: Tensor,
                     num_anchors_per_level: Sequence[int], integral: MaskIntegrals | Tensor | None = None) -> Tensor:
    """The registry's entry point: box IoU then `fixed_iou_assign` (masks are not used)."""
    check_assign_inputs(gt_boxes, gt_masks, anchors, num_anchors_per_level, integral, needs_masks=False)
    return fixed_iou_assign(box_iou(gt_boxes, anchors))
