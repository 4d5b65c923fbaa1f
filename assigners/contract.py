"""The assigners' shared contract: the named sentinels and the input checks every assigner runs.

An assignment is int64 [A]: `>= 0` is the index of the matched GT, `BACKGROUND` a negative
anchor, `IGNORE` an anchor that is neither (fixed-IoU anchors with 0.4 <= IoU < 0.5).
"""
from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import Tensor

from assigners.integrals import MaskIntegrals, as_mask_integrals

BACKGROUND = -1
IGNORE = -2


def _shape(x: object) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def check_boxes(name: str, boxes: object, like: Tensor | None = None, per_gt: bool = False) -> None:
    """A float tensor [N, 4] ([G, K, 4] with `per_gt`); on the device and of the dtype of `like`."""
    dims, text = (3, "[G, K, 4]") if per_gt else (2, "[N, 4]")
    if not isinstance(boxes, Tensor) or boxes.dim() != dims or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must be a tensor {text}, got shape {_shape(boxes)}")
    if not boxes.dtype.is_floating_point:
        raise ValueError(f"{name} must be floating point, got {boxes.dtype} (shape {_shape(boxes)})")
    if like is not None and boxes.device != like.device:
        raise ValueError(f"{name} (shape {_shape(boxes)}) is on {boxes.device}, gt_boxes on {like.device}")
    if like is not None and boxes.dtype != like.dtype:
        raise ValueError(f"{name} (shape {_shape(boxes)}) is {boxes.dtype}, gt_boxes {like.dtype}")


def check_integral(integral: object, gt_boxes: Tensor, name: str = "integral") -> MaskIntegrals:
    """A MaskIntegrals or full int [G, H+1, W+1] for the G boxes, on their device."""
    if isinstance(integral, Tensor) and (integral.dim() != 3 or integral.dtype.is_floating_point
                                         or integral.dtype == torch.bool):
        raise ValueError(f"{name} must be an int tensor [G, H+1, W+1] or a MaskIntegrals, got shape "
                         f"{_shape(integral)} dtype {integral.dtype}")
    mi = as_mask_integrals(integral)
    g = gt_boxes.shape[0]
    if len(mi) != g:
        raise ValueError(f"{name} holds {len(mi)} instances (shape {_shape(integral) if isinstance(integral, Tensor) else len(mi)}) "
                         f"but gt_boxes has {g} (shape {_shape(gt_boxes)})")
    if mi.device != gt_boxes.device:
        raise ValueError(f"{name} is on {mi.device}, gt_boxes on {gt_boxes.device}")
    return mi


def _level_sizes(num_anchors_per_level: object) -> list[int]:
    """A sequence of non-negative integers (Python or NumPy ints) -> list[int]."""
    try:
        if isinstance(num_anchors_per_level, (str, bytes, Tensor)) or not isinstance(num_anchors_per_level, Sequence):
            raise TypeError
        levels = [operator.index(n) for n in num_anchors_per_level]
    except TypeError:
        levels = None
    if levels is None or any(n < 0 for n in levels):
        raise ValueError(f"num_anchors_per_level must be a list of non-negative ints, got {num_anchors_per_level!r}")
    return levels


def check_assign_inputs(gt_boxes: object, gt_masks: object, anchors: object, num_anchors_per_level: object,
                        integral: object, needs_masks: bool) -> MaskIntegrals | None:
    """Validate an assigner call; returns the integrals to count with (None if not needed).

    With `needs_masks`, `integral` wins over `gt_masks` when both are given (it is the
    precomputed form of the same masks); otherwise the compact integrals of `gt_masks` are built.
    """
    check_boxes("gt_boxes", gt_boxes)
    check_boxes("anchors", anchors, like=gt_boxes)
    g, a = gt_boxes.shape[0], anchors.shape[0]
    if gt_masks is not None:
        if not isinstance(gt_masks, Tensor) or gt_masks.dim() != 3 or gt_masks.shape[0] != g:
            raise ValueError(f"gt_masks must be a bool tensor [{g}, H, W] (one per gt box), got shape {_shape(gt_masks)}")
        if gt_masks.dtype != torch.bool:
            raise ValueError(f"gt_masks must be bool, got {gt_masks.dtype} (shape {_shape(gt_masks)})")
        if gt_masks.device != gt_boxes.device:
            raise ValueError(f"gt_masks (shape {_shape(gt_masks)}) is on {gt_masks.device}, gt_boxes on {gt_boxes.device}")
    levels = _level_sizes(num_anchors_per_level)
    if sum(levels) != a:
        raise ValueError(f"num_anchors_per_level {levels} sums to {sum(levels)} but anchors has shape {_shape(anchors)}")
    if not needs_masks:
        if integral is not None:
            check_integral(integral, gt_boxes)
        return None
    if integral is not None:
        return check_integral(integral, gt_boxes)
    if gt_masks is None:
        raise ValueError("this assigner is mask-aware: give gt_masks [G, H, W] or integral, got neither")
    return MaskIntegrals.from_masks(gt_masks)  # compact: Σ region area, not G·H·W
