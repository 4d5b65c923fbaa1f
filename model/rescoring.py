"""YOLACT++ fast mask re-scoring network: predicts each mask's IoU with its ground truth.

Input: cropped predicted soft masks at prototype resolution [N, 1, Hp, Wp]. Layers (official
`maskiou_net`): five 3×3 stride-2 convs without padding (1 -> 8 -> 16 -> 32 -> 64 -> 128), each with
ReLU, a 1×1 conv to C classes with ReLU, global max-pool -> [N, C]. The prediction at the detection's
class is its mask IoU; the mask score is class score × predicted IoU.

Small inputs: the five unpadded stride-2 convs need at least 63×63. Smaller masks (prototypes of
inputs below ~250 px) are zero-padded at the bottom/right to 63, which is what lies outside a
cropped mask anyway.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.init import xavier_init

MIN_INPUT = 63  # 63 -> 31 -> 15 -> 7 -> 3 -> 1 through the five unpadded 3×3/2 convs
MIN_GT_AREA = 25  # proto pixels: smaller GT masks do not train the IoU head (official discard_mask_area)


class MaskIoUNet(nn.Module):
    def __init__(self, num_classes: int, channels: tuple[int, ...] = (8, 16, 32, 64, 128)):
        super().__init__()
        cins = (1,) + channels[:-1]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, stride=2) for i, o in zip(cins, channels))
        self.conv_out = nn.Conv2d(channels[-1], num_classes, 1)
        xavier_init(self)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """masks [N, 1, H, W] in [0, 1] -> predicted IoU per class [N, C] (ReLU'd, ≥ 0)."""
        h, w = masks.shape[-2:]
        if h < MIN_INPUT or w < MIN_INPUT:
            masks = F.pad(masks, (0, max(0, MIN_INPUT - w), 0, max(0, MIN_INPUT - h)))
        x = masks
        for conv in self.convs:
            x = F.relu(conv(x))
        x = F.relu(self.conv_out(x))  # [N, C, h', w']
        return x.amax(dim=(2, 3))  # [N, C]
