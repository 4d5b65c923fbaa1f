"""Anchor assigners and the overlaps they use. Leaf package: imports torch only.

The contract every assigner keeps (docs/design.md §3):

    ASSIGNERS[name](gt_boxes float [G, 4], gt_masks bool [G, H, W] | None, anchors float [A, 4],
                    num_anchors_per_level list[int], integral=None) -> int64 [A]

holding the matched GT index (>= 0), `BACKGROUND` or `IGNORE`. `integral` is the precomputed
form of the masks (`MaskIntegrals`, or a full int [G, H+1, W+1] integral image); the mask-aware
assigners need it or `gt_masks`, the others accept `gt_masks=None`. Bad shapes, dtypes or
devices raise `ValueError`; an unknown name raises `UnknownAssignerError` (a KeyError and a
ValueError) listing the valid ones.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial

from torch import Tensor

from assigners.atss import assign_atss
from assigners.contract import BACKGROUND, IGNORE
from assigners.fixed_iou import assign_fixed_iou
from assigners.integrals import MaskIntegrals, integral_image
from assigners.overlaps import box_diou, box_giou, box_iou, mask_aware_iou, mask_box_iou, mob_ratio

Assigner = Callable[..., Tensor]


class UnknownAssignerError(KeyError, ValueError):
    """An assigner name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry(Mapping[str, Assigner]):
    """A read-only name -> assigner mapping whose failed lookups list the valid names."""

    def __init__(self, entries: dict[str, Assigner]):
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> Assigner:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownAssignerError(
                f"unknown assigner {name!r}; valid names: {', '.join(self._entries)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({list(self._entries)})"


ASSIGNERS = Registry({
    "fixed_iou": assign_fixed_iou,
    "atss_iou": partial(assign_atss, overlap=box_iou),
    "atss_giou": partial(assign_atss, overlap=box_giou),
    "atss_diou": partial(assign_atss, overlap=box_diou),
    "atss_maiou": partial(assign_atss, overlap=mask_aware_iou, mask_aware=True),
    "atss_gmaiou": partial(assign_atss, overlap=mask_box_iou, mask_aware=True),
})

__all__ = [
    "ASSIGNERS", "BACKGROUND", "IGNORE", "MaskIntegrals", "UnknownAssignerError", "integral_image",
    "box_iou", "box_giou", "box_diou", "mask_aware_iou", "mask_box_iou", "mob_ratio",
]
