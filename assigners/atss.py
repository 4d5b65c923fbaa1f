"""ATSS (adaptive training sample selection) with a pluggable overlap (docs/design.md §6).

`atss_assign(gt_boxes [G,4], anchors [A,4], num_anchors_per_level, overlap, ...) -> int64 [A]`:
  1. per FPN level and per GT, the min(k, n_level) anchors whose centres are nearest (L2) to the
     GT centre are candidates; equal distances go to the lowest anchor index;
  2. threshold per GT = mean + std (unbiased) of its candidates' overlaps; keep overlap >= thr;
  3. keep candidates whose centre lies inside the GT box by more than `CENTRE_MARGIN` px;
  4. an anchor positive for several GTs takes the highest overlap (lowest GT index on ties);
     every other anchor is `BACKGROUND` (ATSS never ignores).

The overlap is evaluated only for the candidates, `overlap(gt_boxes [G,4], anchors [G,C,4])
-> [G,C]`; the result equals evaluating it densely and gathering, as the official code does.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from assigners.contract import BACKGROUND, check_assign_inputs
from assigners.integrals import MaskIntegrals

TOPK = 9
CENTRE_MARGIN = 0.01  # px; the official strict `min(l, t, r, b) > 0.01`
_INDEX_BITS = 32  # low bits of the (distance, index) sort key that hold the anchor index

Overlap = Callable[[Tensor, Tensor], Tensor]


def _centres(boxes: Tensor) -> Tensor:
    return (boxes[..., :2] + boxes[..., 2:]) / 2  # [..., 2]


def atss_candidates(gt_boxes: Tensor, anchors: Tensor, num_anchors_per_level: Sequence[int],
                    topk: int = TOPK) -> Tensor:
    """int64 [G, C] anchor indices, C = Σ min(topk, n_level), per level by (distance, index).

    Ties are broken explicitly, not by `torch.topk`'s unspecified order: the key is the float32
    distance's bit pattern (monotone for non-negative floats) above the anchor index, so equal
    distances order by index and every key is unique.
    """
    return _candidates(gt_boxes, _centres(anchors), num_anchors_per_level, topk)


def _candidates(gt_boxes: Tensor, centres: Tensor, num_anchors_per_level: Sequence[int], topk: int) -> Tensor:
    gc = _centres(gt_boxes)  # [G, 2]
    dx = centres[None, :, 0] - gc[:, None, 0]  # [G, A]
    dy = centres[None, :, 1] - gc[:, None, 1]  # [G, A]
    # The official sqrt(dx² + dy²), each step rounded as there (no fused multiply-add), in place;
    # ranked in float32 like the official code.
    d = dx.mul_(dx).add_(dy.mul_(dy)).sqrt_().to(torch.float32)  # [G, A]
    bits = d.view(torch.int32).to(torch.int64)  # [G, A]
    index = torch.arange(centres.shape[0], device=centres.device)  # [A]
    key = torch.add(index, bits, alpha=1 << _INDEX_BITS)  # [G, A]: bits above, index below
    parts, start = [], 0
    for n in num_anchors_per_level:
        k = min(topk, n)
        if k > 0:
            parts.append(key[:, start:start + n].topk(k, dim=1, largest=False, sorted=True).values)
        start += n
    if not parts:
        return torch.zeros((gt_boxes.shape[0], 0), dtype=torch.int64, device=centres.device)
    return torch.cat(parts, 1) & ((1 << _INDEX_BITS) - 1)  # [G, C]


def atss_assign(gt_boxes: Tensor, anchors: Tensor, num_anchors_per_level: Sequence[int], overlap: Overlap,
                gt_valid: Tensor | None = None, topk: int = TOPK,
                groups: tuple[Tensor, int] | None = None) -> Tensor:
    """The ATSS assignment int64 [A] (GT index or BACKGROUND); `gt_valid` bool [G] drops GTs.

    `groups = (image int64 [G], B)`: the GTs of B images sharing `anchors` (`assigners.batch`);
    then the result is int64 [B·A], image b's anchors at b·A.., holding GT rows.
    Inputs are assumed checked (`contract.check_assign_inputs`). No host sync: runs queued on CUDA.
    """
    g, a = gt_boxes.shape[0], anchors.shape[0]
    slots = a * (groups[1] if groups is not None else 1)
    matched = torch.full((slots,), BACKGROUND, dtype=torch.int64, device=anchors.device)
    if g == 0 or a == 0:
        return matched
    centres = _centres(anchors)  # [A, 2]
    cand = _candidates(gt_boxes, centres, num_anchors_per_level, topk)  # [G, C]
    if cand.shape[1] < 2:
        # The unbiased std of one overlap is undefined (NaN in the official code, so no positives).
        return matched
    ov = overlap(gt_boxes, anchors[cand])  # [G, C]
    thr = ov.mean(1, keepdim=True) + ov.std(1, keepdim=True)  # [G, 1]
    c = centres[cand]  # [G, C, 2]
    gap = torch.minimum(c - gt_boxes[:, None, :2], gt_boxes[:, None, 2:] - c)  # [G, C, 2]
    pos = (ov >= thr) & (torch.minimum(gap[..., 0], gap[..., 1]) > CENTRE_MARGIN)  # [G, C]
    if gt_valid is not None:
        pos &= gt_valid[:, None]
    # An anchor positive for several GTs takes the highest overlap, then the lowest GT index:
    # two scatter reductions over the (GT, candidate) pairs, O(G·C), no [G, A] table.
    slot = cand if groups is None else cand + groups[0][:, None] * a  # [G, C]
    flat = slot.reshape(-1)  # [G·C]
    best = torch.full((slots,), float("-inf"), dtype=ov.dtype, device=ov.device)
    best.scatter_reduce_(0, flat, torch.where(pos, ov, float("-inf")).reshape(-1), reduce="amax")  # [slots]
    top = pos & (ov == best[slot])  # [G, C]
    gt_index = torch.arange(g, device=anchors.device)[:, None]  # [G, 1]
    winner = torch.full((slots,), g, dtype=torch.int64, device=anchors.device)
    winner.scatter_reduce_(0, flat, torch.where(top, gt_index, g).reshape(-1), reduce="amin")  # [slots]
    return torch.where(winner < g, winner, matched)


@torch.no_grad()  # an assignment is not differentiable; also keeps the in-place ops legal
def assign_atss(gt_boxes: Tensor, gt_masks: Tensor | None, anchors: Tensor, num_anchors_per_level: Sequence[int],
                integral: MaskIntegrals | Tensor | None = None, *, overlap: Callable[..., Tensor],
                mask_aware: bool = False) -> Tensor:
    """The registry's ATSS entry point: checks inputs, binds the masks to a mask-aware overlap.

    A mask-aware `overlap(gt_boxes, anchors, integral)` gets the integrals (given, or built from
    `gt_masks`); GTs with no mask pixel get no positives (docs/design.md §5: the official NaN, without NaN).
    """
    mi = check_assign_inputs(gt_boxes, gt_masks, anchors, num_anchors_per_level, integral, mask_aware)
    if not mask_aware:
        return atss_assign(gt_boxes, anchors, num_anchors_per_level, overlap)
    return atss_assign(gt_boxes, anchors, num_anchors_per_level, lambda gt, anc: overlap(gt, anc, mi),
                       gt_valid=mi.areas() > 0)
