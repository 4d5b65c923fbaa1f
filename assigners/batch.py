"""A whole batch assigned in one call per assigner family (docs/design.md §6).

The images of a batch share one anchor grid. Their GTs are concatenated (image b's at rows
start[b]:start[b+1], in order), every per-GT step of the per-image assigners runs once over all
of them, and the per-anchor steps (an anchor's best GT, the forced matches) are scatter
reductions over the flat index b·A + anchor. Each value is computed by the same operations on
the same operands as in the per-image call, so the assignments are the same bit for bit
(tests/assigners/test_batch.py). No host sync: the GT counts come from shapes.

    batch_fn(gt_boxes: list[float [G_b, 4]], gt_masks: list[bool [G_b, H, W] | None],
             anchors float [A, 4], num_anchors_per_level, integrals: list[MaskIntegrals | None] | None)
        -> int64 [B, A]  (GT index within image b, BACKGROUND or IGNORE)

Inputs are checked as the per-image assigners check them, image by image (shapes only).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

import torch
from torch import Tensor

from assigners.atss import atss_assign
from assigners.contract import BACKGROUND, check_assign_inputs
from assigners.fixed_iou import NO_GT, resolve_fixed_iou
from assigners.integrals import MaskIntegrals
from assigners.overlaps import box_iou


@dataclass(frozen=True)
class BatchedGT:
    """The GTs of B images as one table."""

    boxes: Tensor  # float [N, 4], N = Σ G_b
    image: Tensor  # int64 [N] image of each GT
    start: Tensor  # int64 [N] row of its image's first GT (local index = row − start)
    num_images: int


def concat_gts(gt_boxes: Sequence[Tensor], like: Tensor) -> BatchedGT:
    """Concatenate per-image boxes; `like` gives dtype and device when the batch has no GT."""
    dev = like.device
    counts = [b.shape[0] for b in gt_boxes]  # from shapes: no host sync
    firsts = [sum(counts[:i]) for i in range(len(counts))]
    image = [torch.full((g,), b, dtype=torch.int64, device=dev) for b, g in enumerate(counts)]
    start = [torch.full((g,), s, dtype=torch.int64, device=dev) for g, s in zip(counts, firsts)]
    boxes = torch.cat(list(gt_boxes)) if gt_boxes else like.new_zeros((0, 4))  # [N, 4]
    empty = torch.zeros(0, dtype=torch.int64, device=dev)
    return BatchedGT(boxes=boxes, image=torch.cat(image) if image else empty,
                     start=torch.cat(start) if start else empty, num_images=len(counts))


def _checked(gt_boxes, gt_masks, anchors, levels, integrals, needs_masks: bool) -> list[MaskIntegrals | None]:
    integrals = integrals if integrals is not None else [None] * len(gt_boxes)
    if not (len(gt_boxes) == len(gt_masks) == len(integrals)):
        raise ValueError(f"a batch needs one entry per image: {len(gt_boxes)} gt_boxes, "
                         f"{len(gt_masks)} gt_masks, {len(integrals)} integrals")
    return [check_assign_inputs(b, m, anchors, levels, i, needs_masks)
            for b, m, i in zip(gt_boxes, gt_masks, integrals)]


@torch.no_grad()
def batch_atss(gt_boxes: Sequence[Tensor], gt_masks: Sequence[Tensor | None], anchors: Tensor,
               num_anchors_per_level: Sequence[int], integrals: Sequence | None = None, *,
               overlap: Callable[..., Tensor], mask_aware: bool = False) -> Tensor:
    """ATSS over the whole batch: `atss_assign` once over the concatenated GTs -> int64 [B, A]."""
    mis = _checked(gt_boxes, gt_masks, anchors, num_anchors_per_level, integrals, mask_aware)
    gts = concat_gts(gt_boxes, anchors)
    a = anchors.shape[0]
    if mask_aware:
        mi = concat_integrals(mis)
        fn, valid = (lambda gt, anc: overlap(gt, anc, mi)), mi.areas() > 0
    else:
        fn, valid = overlap, None
    flat = atss_assign(gts.boxes, anchors, num_anchors_per_level, fn, gt_valid=valid,
                       groups=(gts.image, gts.num_images))  # [B·A], GT rows
    return _local(flat.view(gts.num_images, a), gts)  # [B, A]


@torch.no_grad()
def batch_fixed_iou(gt_boxes: Sequence[Tensor], gt_masks: Sequence[Tensor | None], anchors: Tensor,
                    num_anchors_per_level: Sequence[int], integrals: Sequence | None = None) -> Tensor:
    """The fixed-IoU assignment of every image -> int64 [B, A] (one IoU table for the batch)."""
    _checked(gt_boxes, gt_masks, anchors, num_anchors_per_level, integrals, needs_masks=False)
    gts = concat_gts(gt_boxes, anchors)
    b, a, n = gts.num_images, anchors.shape[0], gts.boxes.shape[0]
    dev = anchors.device
    if n == 0 or a == 0:
        return torch.full((b, a), BACKGROUND, dtype=torch.int64, device=dev)
    # One IoU table padded to the batch's largest G with empty boxes (IoU 0 <= every real IoU, and
    # after the real GTs, so never the first maximal one), reduced over its GT axis as per image.
    counts = [t.shape[0] for t in gt_boxes]
    gmax = max(counts)
    local = torch.cat([torch.arange(g, device=dev) for g in counts])  # [N] index within the image
    padded = gts.boxes.new_zeros((b, gmax, 4))
    padded[gts.image, local] = gts.boxes  # [B, Gmax, 4]
    overlaps = box_iou(padded.view(b * gmax, 4), anchors).view(b, gmax, a)  # [B, Gmax, A]
    best, best_gt = overlaps.max(1)  # [B, A] each; max returns the first maximal index
    best_anchor = overlaps.argmax(2)[gts.image, local]  # [N], as `best_anchor_per_gt` per image
    forced = torch.full((b * a,), NO_GT, dtype=torch.int64, device=dev)
    forced.scatter_reduce_(0, gts.image * a + best_anchor, local, reduce="amax")  # a later GT wins
    return resolve_fixed_iou(best, best_gt, forced.view(b, a))  # [B, A]


def _local(rows: Tensor, gts: BatchedGT) -> Tensor:
    """GT rows of the concatenated table (and negative sentinels) -> index within the image."""
    if gts.boxes.shape[0] == 0:
        return rows
    return torch.where(rows >= 0, rows - gts.start[rows.clamp(min=0)], rows)


def looped(per_image: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """The batch form of an assigner without one: `per_image` image by image, stacked."""
    def batch(gt_boxes: Sequence[Tensor], gt_masks: Sequence[Tensor | None], anchors: Tensor,
              num_anchors_per_level: Sequence[int], integrals: Sequence | None = None) -> Tensor:
        integrals = integrals if integrals is not None else [None] * len(gt_boxes)
        rows = [per_image(b, m, anchors, num_anchors_per_level, i) for b, m, i in zip(gt_boxes, gt_masks, integrals)]
        return torch.stack(rows) if rows else anchors.new_zeros((0, anchors.shape[0]), dtype=torch.int64)
    return batch


def concat_integrals(parts: "list[MaskIntegrals]") -> MaskIntegrals:
    """The instances of several `MaskIntegrals` in order, as one (buffers concatenated, offsets
    and lookup tables shifted; no recount). With frame transforms (all parts or none), affine and
    window become per instance [G, 4]; `image_size` is the largest of each side (only `full` uses it)."""
    if not parts:
        raise ValueError("concat_integrals needs at least one MaskIntegrals")
    with_affine = [p.affine is not None for p in parts]
    if any(with_affine) != all(with_affine):
        raise ValueError("concat_integrals: either every part has a frame transform or none has")
    shifts = list(accumulate((p.data.numel() for p in parts), initial=0))[:-1]
    cat = lambda ts: torch.cat(list(ts))  # noqa: E731
    per = (lambda t, p: t.expand(len(p), 4)) if all(with_affine) else None  # [4] -> [G, 4]
    out = MaskIntegrals(
        data=cat(p.data for p in parts),
        offset=cat(p.offset + s for p, s in zip(parts, shifts)),
        origin=cat(p.origin for p in parts), size=cat(p.size for p in parts),
        total=cat(p.total for p in parts),
        image_size=(max(p.image_size[0] for p in parts), max(p.image_size[1] for p in parts)),
        affine=cat(p.affine.view(-1, 4) if p.affine.dim() == 2 else per(p.affine, p) for p in parts) if per else None,
        window=cat(p.window.view(-1, 4) if p.window.dim() == 2 else per(p.window, p) for p in parts) if per else None)
    # The lookup tables are joined too (same package: it knows their layout), not rebuilt.
    geometry = [p._geometry for p in parts]  # [G_p, ...] each
    origin4, size4, corners, base = (cat(g[i] for g in geometry) for i in range(4))
    base = base + cat(torch.full_like(g[3], float(s)) for g, s in zip(geometry, shifts))  # [G, 1, 4]
    out.__dict__["_geometry"] = (origin4, size4, corners, base)
    out.__dict__["_signs_cache"] = dict(parts[0].__dict__.get("_signs_cache", {}))
    return out
