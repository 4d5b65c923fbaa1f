"""YOLACT: ResNet -> FPN (P3–P7) -> shared prediction head + protonet (+ train-only semantic head).

`Yolact.forward(images [B, 3, S, S])` returns a dict of raw tensors; no loss, assignment or
post-processing happens inside (see `model.losses`, `model.postprocess`):
- `cls` [B, A, C+1] class logits (index 0 = background, label + 1 = dataset label), or [B, A, C]
  sigmoid logits (index = label) with `sigmoid_cls`; `cls_sigmoid` (bool) says which
- `box` [B, A, 4] box deltas (dx, dy, dw, dh) before the stds (0.1, 0.1, 0.2, 0.2), see `model.box_coding`
- `coef` [B, A, k] mask coefficients (tanh); [B, A, 4, k] with `sipmask` (quadrants TL, TR, BL, BR)
- `proto` [B, k, Hp, Wp] prototypes (Hp = 2·H3: 138 at 550)
- `sem` [B, C, H3, W3] semantic logits on P3, in training mode only
- `anchors` [A, 4] xyxy input pixels, `num_anchors_per_level` list[int] (P3..P7)
- `image_size` (S_h, S_w) of the input
- `mask_iou_net` (with `mask_rescoring`): the YOLACT++ re-scoring module, used by losses/postprocess
A follows `model.anchors` order (level, row, column, anchor-within-location).
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from model.anchors import anchors_per_location, make_anchors
from model.backbone import ResNet
from model.fpn import FPN, CarafeFPN
from model.heads import PredictionHead, ProtoNet, SemanticHead
from model.rescoring import MaskIoUNet


class Yolact(nn.Module):
    def __init__(self, num_classes: int = 80, backbone: str = "resnet50", anchor_grid: str = "yolact",
                 fpn_channels: int = 256, num_protos: int = 32, stride_in_1x1: bool = False,
                 frozen_bn: bool = False, yolact_550_strides: bool = True, scales_per_level: int = 1,
                 dcn_interval: int = 0, dcn_stages: tuple[int, ...] = (3, 4, 5), dcn_groups: int = 1,
                 dcn_bias: bool = True, mask_rescoring: bool = False, carafe: bool = False, sipmask: bool = False,
                 sigmoid_cls: bool = False):
        super().__init__()
        if num_classes < 1 or fpn_channels < 1 or num_protos < 1:
            raise ValueError(f"num_classes, fpn_channels and num_protos must be positive, got "
                             f"{num_classes}, {fpn_channels}, {num_protos}")
        self.num_classes, self.num_protos, self.sipmask = num_classes, num_protos, sipmask
        self.anchor_grid, self.scales_per_level = anchor_grid, scales_per_level
        self.yolact_550_strides, self.sigmoid_cls = yolact_550_strides, sigmoid_cls
        n = anchors_per_location(anchor_grid, scales_per_level)  # validates the grid name
        self.backbone = ResNet(backbone, stride_in_1x1, frozen_bn, dcn_interval, dcn_stages, dcn_groups, dcn_bias)
        neck = CarafeFPN if carafe else FPN
        self.fpn = neck(self.backbone.out_channels, fpn_channels)
        self.protonet = ProtoNet(fpn_channels, num_protos, fpn_channels)
        self.head = PredictionHead(fpn_channels, n, num_classes, num_protos, sipmask, sigmoid_cls)
        self.semantic_head = SemanticHead(fpn_channels, num_classes)
        self.mask_iou_net = MaskIoUNet(num_classes) if mask_rescoring else None
        self._anchor_cache: dict = {}

    def anchors(self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int],
                dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, list[int]]:
        # low-precision features (bf16 autocast) would round anchor corners by pixels: keep fp32 then
        if dtype not in (torch.float32, torch.float64):
            dtype = torch.float32
        key = (tuple(feature_sizes), tuple(image_size), dtype, str(device))
        if key not in self._anchor_cache:
            self._anchor_cache = {key: make_anchors(self.anchor_grid, feature_sizes, image_size,
                                                    self.scales_per_level, self.yolact_550_strides,
                                                    dtype, device)}
        return self._anchor_cache[key]

    def forward(self, images: torch.Tensor) -> dict:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, S, S], got {tuple(images.shape)}")
        feats = self.fpn(self.backbone(images))  # P3..P7
        cls, box, coef = self.head(feats)
        proto = self.protonet(feats[0])
        image_size = tuple(images.shape[-2:])
        anchors, counts = self.anchors([tuple(f.shape[-2:]) for f in feats], image_size, feats[0].dtype,
                                       feats[0].device)
        out = {"cls": cls, "box": box, "coef": coef, "proto": proto, "anchors": anchors,
               "num_anchors_per_level": list(counts), "image_size": image_size, "cls_sigmoid": self.sigmoid_cls}
        if self.training:
            out["sem"] = self.semantic_head(feats[0])
        if self.mask_iou_net is not None:
            out["mask_iou_net"] = self.mask_iou_net
        return out


def build_yolact(cfg, anchor_grid: str | None = None, load_weights: bool = True) -> Yolact:
    """Build from a `pipeline.config.ModelConfig` (read by attribute: every option of `Yolact`).

    `anchor_grid` overrides `cfg.anchor_grid`; one of them must name a grid ("yolact", "atss",
    "mayolact") since "auto" depends on the assigner (resolve it with `pipeline.config.resolve_anchor_grid`).
    With `load_weights` and `cfg.backbone_weights` set, the backbone is loaded (strict keys, see
    `model.weights.load_backbone_weights`) and what was loaded is printed.
    """
    grid = anchor_grid or cfg.anchor_grid
    if grid == "auto":
        raise ValueError("anchor_grid is 'auto': pass the resolved grid, e.g. build_yolact(cfg, anchor_grid='atss')")
    options = {name: getattr(cfg, name) for name in inspect.signature(Yolact).parameters if name != "anchor_grid"}
    model = Yolact(anchor_grid=grid, **options)
    if load_weights and cfg.backbone_weights:
        from model.weights import load_backbone_weights
        print(load_backbone_weights(model.backbone, cfg.backbone_weights))
    return model
