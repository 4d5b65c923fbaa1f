"""YOLACT's heads: the shared prediction head, the protonet and the train-only semantic head.

Class convention (stated once, here): the class head has C + 1 outputs, index 0 is background and
index label + 1 is the contiguous dataset label 0..C-1 (softmax). With `sigmoid_cls` (RS-YOLACT,
mmdet's `use_sigmoid=True`) it has C outputs, index label, one sigmoid each, and no background.

Shapes for features P3..P7 [B, F, H_l, W_l] and n anchors per location:
- `PredictionHead` -> cls [B, A, C+1] logits, box [B, A, 4] deltas, coef [B, A, k] in (-1, 1) (tanh),
  or [B, A, 4, k] with SipMask spatial coefficients (quadrants TL, TR, BL, BR);
  A = Σ_l H_l·W_l·n, ordered like `model.anchors` (level, row, column, anchor) by
  `flatten_anchor_outputs`.
- `ProtoNet` on P3 -> [B, k, 2·H3, 2·W3] prototypes (138² at 550), ReLU'd.
- `SemanticHead` on P3 -> [B, C, H3, W3] logits (training only).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.init import xavier_init

SIPMASK_QUADRANTS = 4  # coefficient sets per anchor with SipMask (2×2 box quadrants)


def flatten_anchor_outputs(x: torch.Tensor, channels: int) -> torch.Tensor:
    """[B, n·K, H, W] conv output -> [B, H·W·n, K]: the one reshape that matches the anchor order."""
    B, _, H, W = x.shape
    x = x.view(B, -1, channels, H, W)  # [B, n, K, H, W]
    return x.permute(0, 3, 4, 1, 2).reshape(B, -1, channels)  # [B, H*W*n, K]


class PredictionHead(nn.Module):
    """One 3×3 conv + ReLU shared by all levels, then parallel 3×3 convs for class, box, coefficients."""

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_protos: int,
                 sipmask: bool = False, sigmoid_cls: bool = False):
        super().__init__()
        self.num_classes, self.num_protos = num_classes, num_protos
        self.cls_channels = num_classes if sigmoid_cls else num_classes + 1
        self.coef_sets = SIPMASK_QUADRANTS if sipmask else 1
        self.shared = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv_cls = nn.Conv2d(in_channels, num_anchors * self.cls_channels, 3, padding=1)
        self.conv_box = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        self.conv_coef = nn.Conv2d(in_channels, num_anchors * num_protos * self.coef_sets, 3, padding=1)
        xavier_init(self)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cls, box, coef = [], [], []
        for x in feats:
            x = F.relu(self.shared(x))
            cls.append(flatten_anchor_outputs(self.conv_cls(x), self.cls_channels))
            box.append(flatten_anchor_outputs(self.conv_box(x), 4))
            coef.append(flatten_anchor_outputs(self.conv_coef(x), self.num_protos * self.coef_sets))
        coef_all = torch.cat(coef, dim=1).tanh()  # [B, A, sets*k]
        if self.coef_sets > 1:
            coef_all = coef_all.unflatten(-1, (self.coef_sets, self.num_protos))  # [B, A, 4, k]
        return torch.cat(cls, dim=1), torch.cat(box, dim=1), coef_all


class ProtoNet(nn.Module):
    """3× (3×3 conv + ReLU), ×2 bilinear upsample + ReLU, 3×3 conv + ReLU, 1×1 conv -> k, ReLU."""

    def __init__(self, in_channels: int, num_protos: int = 32, channels: int = 256):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(in_channels, channels, 3, padding=1),
                                    nn.Conv2d(channels, channels, 3, padding=1),
                                    nn.Conv2d(channels, channels, 3, padding=1)])
        self.conv_up = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_out = nn.Conv2d(channels, num_protos, 1)
        xavier_init(self)

    def forward(self, p3: torch.Tensor) -> torch.Tensor:
        x = p3
        for conv in self.convs:
            x = F.relu(conv(x))
        # the ReLU the reference applies after the upsample is a no-op on a ReLU'd input: left out
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.relu(self.conv_up(x))
        return F.relu(self.conv_out(x))


class SemanticHead(nn.Module):
    """1×1 conv on P3 to C class logits; an auxiliary training loss only."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)
        xavier_init(self)

    def forward(self, p3: torch.Tensor) -> torch.Tensor:
        return self.conv(p3)
