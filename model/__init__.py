"""YOLACT in plain PyTorch (imports torch only; never `assigners` or `pipeline`).

The training step composes model -> assigner -> losses: anchors and assignments cross as tensors.
Class convention: the class head has C + 1 outputs, background at index 0, label l at l + 1
(`model.heads`). Output contract of `Yolact.forward`: see `model.yolact`.
"""
from model.anchors import ANCHOR_GRIDS, anchors_per_location, make_anchors, pyramid_sizes
from model.summary import format_parameter_summary, parameter_summary
from model.yolact import Yolact, build_yolact

__all__ = ["ANCHOR_GRIDS", "Yolact", "anchors_per_location", "build_yolact", "format_parameter_summary",
           "make_anchors", "parameter_summary", "pyramid_sizes"]
