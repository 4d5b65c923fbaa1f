"""ResNet-18/50/101 in plain torch, returning C3, C4, C5 for the FPN.

Parameter and buffer names follow torchvision (`conv1`, `bn1`, `layer1`..`layer4`, `downsample.0/1`,
`fc`), so torchvision-format weights and the converted Keras ImageNet ResNet-50 (`model.weights`)
load with strict key checking.

Options:
- `stride_in_1x1`: the stride-2 of each stage sits on the first 1×1 conv (Caffe/Keras/MSRA layout,
  what the converted ImageNet weights expect) instead of the 3×3 (torchvision "v1.5" layout).
  Bottleneck nets only: ResNet-18's basic blocks have no 1×1 conv.
- `frozen_bn`: BatchNorm replaced by a fixed affine map (statistics and scale/shift are buffers).
  The reference setup trains BN (docs/design.md §8); freezing is for tiny per-device batches.
- `dcn_bias`: the DCN carries a bias in dbolya's YOLACT++ layout, none in mmdetection's (maYOLACT).
- `dcn_interval`/`dcn_stages`/`dcn_groups`: the 3×3 conv of block i of stage s (C2..C5 = 2..5) is a
  DCNv2 (`model.dcn`) when s ∈ dcn_stages and i % dcn_interval == 0 (YOLACT++ R50: interval 1, every
  block of C3–C5; R101: interval 3; maYOLACT: interval 1 with 4 deformable groups).

Shapes: images [B,3,S,S] -> [C3 [B,c3,S3,S3], C4 [B,c4,S4,S4], C5 [B,c5,S5,S5]] with
S2 = ⌊(⌊(S-1)/2⌋+1-1)/2⌋+1 (stem: 7×7/2 then 3×3/2 max-pool) and S_{l+1} = ⌊(S_l-1)/2⌋+1;
550 -> 69, 35, 18. Channels (c3, c4, c5) = (128, 256, 512) for ResNet-18, (512, 1024, 2048) otherwise.
"""
from __future__ import annotations

import torch
from torch import nn

from model.dcn import DeformConv2d

DEPTHS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3)),
          "resnet101": ("bottleneck", (3, 4, 23, 3))}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters (all buffers, nothing trains).

    Keeps a `num_batches_tracked` buffer, unused, so its state dict has exactly BatchNorm2d's keys and
    checkpoints move between frozen and trained BN with strict loading.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()  # [C]
        shift = self.bias - self.running_mean * scale  # [C]
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


def _conv3x3(cin: int, cout: int, stride: int, dcn_groups: int, dcn_bias: bool) -> nn.Module:
    if dcn_groups:
        return DeformConv2d(cin, cout, 3, stride, 1, deformable_groups=dcn_groups, bias=dcn_bias)
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, norm, stride_in_1x1: bool = False, dcn_groups: int = 0,
                 dcn_bias: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes, 1, dcn_groups, dcn_bias)
        self.bn2 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), norm(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, norm, stride_in_1x1: bool = False, dcn_groups: int = 0,
                 dcn_bias: bool = True):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(cin, planes, 1, s1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes, s3, dcn_groups, dcn_bias)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = norm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False), norm(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet trunk; `forward` gives [C3, C4, C5], `classify` the ImageNet logits when `num_classes` is set."""

    def __init__(self, depth: str = "resnet50", stride_in_1x1: bool = False, frozen_bn: bool = False,
                 dcn_interval: int = 0, dcn_stages: tuple[int, ...] = (3, 4, 5), dcn_groups: int = 1,
                 dcn_bias: bool = True, num_classes: int | None = None):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"unknown backbone {depth!r}; valid: {sorted(DEPTHS)}")
        if dcn_interval < 0 or (dcn_interval and dcn_groups < 1):
            raise ValueError(f"dcn_interval must be >= 0 and dcn_groups >= 1, got {dcn_interval}, {dcn_groups}")
        if not set(dcn_stages) <= {2, 3, 4, 5}:
            raise ValueError(f"dcn_stages must be within (2, 3, 4, 5) (C2..C5), got {dcn_stages}")
        kind, blocks = DEPTHS[depth]
        block = Bottleneck if kind == "bottleneck" else BasicBlock
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            stage = i + 2  # layer1 is C2
            layers = []
            for b in range(n):
                dcn = dcn_groups if dcn_interval and stage in dcn_stages and b % dcn_interval == 0 else 0
                layers.append(block(cin, planes, 2 if (b == 0 and stage > 2) else 1, norm, stride_in_1x1, dcn,
                                    dcn_bias))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.out_channels = [128 * block.expansion, 256 * block.expansion, 512 * block.expansion]
        self.fc = nn.Linear(cin, num_classes) if num_classes else None
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, DeformConv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # after the loop above, which also visits the offset convs
            if isinstance(m, DeformConv2d):
                m.reset_offsets()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B, num_classes] (global average pool of C5, then `fc`)."""
        if self.fc is None:
            raise ValueError("this ResNet was built without a classifier (num_classes=None)")
        return self.fc(self.forward(x)[-1].mean(dim=(2, 3)))
