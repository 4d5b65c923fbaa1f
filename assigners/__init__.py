"""Anchor assigners and the overlaps they use. Leaf package: imports torch only.

The contract every assigner keeps (docs/design.md §3):

    ASSIGNERS[name](gt_boxes float [G, 4], gt_masks bool [G, H, W] | None, anchors float [A, 4],
                    num_anchors_per_level list[int], integral=None) -> int64 [A]

holding the matched GT index (>= 0), `BACKGROUND` or `IGNORE`. `integral` is the precomputed
form of the masks (`MaskIntegrals`, or a full int [G, H+1, W+1] integral image); the mask-aware
assigners need it or `gt_masks`, the others accept `gt_masks=None`. Bad shapes, dtypes or
devices raise `ValueError`; an unknown name raises `UnknownAssignerError` (a KeyError and a
ValueError) listing the valid ones.

Each entry is also callable on a whole batch, `ASSIGNERS[name].batch(gt_boxes: list, gt_masks: list,
anchors, num_anchors_per_level, integrals: list | None) -> int64 [B, A]`: one call per assigner
family over the concatenated GTs (`assigners.batch`), equal to the per-image calls bit for bit.
"atss_maiou_brute" (benchmark only: maIoU Table 3's slow baseline) counts every anchor's mask
pixels by brute force (`assigners.brute`) and gives the assignments of "atss_maiou".
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial

from torch import Tensor

from assigners.atss import assign_atss
from assigners.batch import batch_atss, batch_fixed_iou, looped
from assigners.brute import assign_atss_brute
from assigners.contract import BACKGROUND, IGNORE
from assigners.fixed_iou import assign_fixed_iou
from assigners.integrals import MaskIntegrals, integral_image
from assigners.overlaps import box_diou, box_giou, box_iou, mask_aware_iou, mask_box_iou, mob_ratio



@dataclass(frozen=True)
class Assigner:
    """One registered assigner: called as `per_image` (the contract above); `batch` assigns a batch."""

    per_image: Callable[..., Tensor]
    batch: Callable[..., Tensor]

    def __call__(self, *args, **kwargs) -> Tensor:
        return self.per_image(*args, **kwargs)


def _atss(overlap: Callable[..., Tensor], mask_aware: bool = False) -> Assigner:
    return Assigner(partial(assign_atss, overlap=overlap, mask_aware=mask_aware),
                    partial(batch_atss, overlap=overlap, mask_aware=mask_aware))


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
    "fixed_iou": Assigner(assign_fixed_iou, batch_fixed_iou),
    "atss_iou": _atss(box_iou),
    "atss_giou": _atss(box_giou),
    "atss_diou": _atss(box_diou),
    "atss_maiou": _atss(mask_aware_iou, mask_aware=True),
    "atss_gmaiou": _atss(mask_box_iou, mask_aware=True),
    "atss_maiou_brute": Assigner(assign_atss_brute, looped(assign_atss_brute)),
})

__all__ = [
    "ASSIGNERS", "Assigner", "BACKGROUND", "IGNORE", "MaskIntegrals", "UnknownAssignerError", "integral_image",
    "box_iou", "box_giou", "box_diou", "mask_aware_iou", "mask_box_iou", "mob_ratio",
]
