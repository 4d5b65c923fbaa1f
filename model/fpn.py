"""Feature pyramids P3–P7 from C3–C5 (mmdetection layout, as the maIoU configs use).

`FPN` (`add_extra_convs='on_input'`): 1×1 laterals, top-down sum with bilinear upsampling to the
exact lateral size (69/35/18 at 550, not ×2), 3×3 output convs, P6 = 3×3/2 conv on C5 (2048 ch),
P7 = 3×3/2 conv on P6; no activation on any output (unlike the official YOLACT FPN).

`CarafeFPN` (maYOLACT's `FPN_CARAFE`): the extra levels are built first as laterals (P6 lateral =
3×3/2 conv on C5, P7 lateral = 3×3/2 conv on it), the top-down path runs from P7 down with CARAFE
×2 upsampling (cropped to the lateral size when the ×2 map is one larger, e.g. 5 -> 10 -> 9), and
every level, P6 and P7 included, gets a 3×3 output conv.

Shapes: [C3, C4, C5] -> [P3..P7], each [B, out_channels, S_l, S_l].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.init import xavier_init


class FPN(nn.Module):
    def __init__(self, in_channels: list[int], out_channels: int = 256):
        super().__init__()
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.p6 = nn.Conv2d(in_channels[-1], out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        xavier_init(self)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            up = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="bilinear", align_corners=False)
            laterals[i - 1] = laterals[i - 1] + up
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        p6 = self.p6(feats[-1])
        return outs + [p6, self.p7(p6)]


def carafe(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int, scale: int) -> torch.Tensor:
    """Content-aware reassembly: output pixel (y, x) = Σ_k kernels[k, y, x] · input[k-neighbourhood of (y/s, x/s)].

    x [B, C, h, w]; kernels [B, k², h·s, w·s] (already normalised); returns [B, C, h·s, w·s].
    """
    B, C, h, w = x.shape
    k2 = kernel_size * kernel_size
    patches = F.unfold(x, kernel_size, padding=kernel_size // 2).view(B, C, k2, h, w)  # [B, C, k², h, w]
    kern = kernels.view(B, k2, h, scale, w, scale)  # [B, k², h, s, w, s]
    out = torch.einsum("bckhw,bkhywx->bchywx", patches, kern.to(patches.dtype))  # [B, C, h, s, w, s]
    return out.reshape(B, C, h * scale, w * scale)


class CARAFE(nn.Module):
    """CARAFE ×scale upsampler (mmcv `CARAFEPack`: compressor 1×1, encoder k_enc×k_enc, softmax kernels)."""

    def __init__(self, channels: int, scale: int = 2, up_kernel: int = 5, encoder_kernel: int = 3,
                 compressed_channels: int = 64):
        super().__init__()
        self.scale, self.up_kernel = scale, up_kernel
        self.compressor = nn.Conv2d(channels, compressed_channels, 1)
        self.encoder = nn.Conv2d(compressed_channels, up_kernel * up_kernel * scale * scale, encoder_kernel,
                                 padding=encoder_kernel // 2)
        xavier_init(self.compressor)
        nn.init.normal_(self.encoder.weight, std=0.001)  # near-uniform kernels at start (mmcv init)
        nn.init.zeros_(self.encoder.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernels = self.encoder(self.compressor(x))  # [B, k²·s², h, w]
        kernels = F.pixel_shuffle(kernels, self.scale)  # [B, k², h·s, w·s]
        kernels = kernels.float().softmax(dim=1)
        return carafe(x, kernels, self.up_kernel, self.scale)


class CarafeFPN(nn.Module):
    def __init__(self, in_channels: list[int], out_channels: int = 256, up_kernel: int = 5,
                 encoder_kernel: int = 3, compressed_channels: int = 64):
        super().__init__()
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.lateral_convs.append(nn.Conv2d(in_channels[-1], out_channels, 3, stride=2, padding=1))  # P6
        self.lateral_convs.append(nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1))  # P7
        levels = len(self.lateral_convs)
        self.fpn_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(levels))
        xavier_init(self)
        self.upsamplers = nn.ModuleList(
            CARAFE(out_channels, 2, up_kernel, encoder_kernel, compressed_channels) for _ in range(levels - 1))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        p6 = self.lateral_convs[len(feats)](feats[-1])
        laterals += [p6, self.lateral_convs[len(feats) + 1](p6)]
        for i in range(len(laterals) - 1, 0, -1):
            up = self.upsamplers[i - 1](laterals[i])
            h, w = laterals[i - 1].shape[-2:]
            laterals[i - 1] = laterals[i - 1] + up[..., :h, :w].to(laterals[i - 1].dtype)
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
