"""YOLACT in plain PyTorch (imports torch only; never `assigners` or `pipeline`).

The training step composes model -> assigner -> losses: anchors and assignments cross as tensors.
Class convention: the class head has C + 1 outputs, background at index 0, label l at l + 1
(`model.heads`). Output contract of `Yolact.forward`: see `model.yolact`.
"""
from model.anchors import ANCHOR_GRIDS, anchors_per_location, make_anchors, pyramid_sizes
from model.losses import BACKGROUND, DEFAULT_LOSS_WEIGHTS, IGNORE, losses
from model.nms import fast_nms, standard_nms
from model.postprocess import PostprocessParams, postprocess
from model.rank_sort import rank_sort_loss
from model.summary import format_parameter_summary, parameter_summary
from model.yolact import Yolact, build_yolact

__all__ = ["ANCHOR_GRIDS", "BACKGROUND", "DEFAULT_LOSS_WEIGHTS", "IGNORE", "PostprocessParams", "Yolact",
           "anchors_per_location", "build_yolact", "fast_nms", "format_parameter_summary", "losses",
           "make_anchors", "parameter_summary", "postprocess", "pyramid_sizes", "rank_sort_loss", "standard_nms"]
