"""Modulated deformable convolution (DCNv2) in plain torch: bilinear sampling with `grid_sample`.

No compiled extension: the op is `deform_conv2d`, a function over tensors, and `DeformConv2d` the
module that owns the weight and the offset/mask branch (a 3×3 conv, zero-initialised, so a fresh
DCN samples the regular grid with every modulation mask at sigmoid(0) = 0.5, as in the official
YOLACT++ and mmcv layers).

Shapes: x [B,C,H,W]; offset [B, 2·dg·kh·kw, Ho, Wo] laid out as (group, kernel tap, (dy, dx));
mask [B, dg·kh·kw, Ho, Wo] in [0, 1]; weight [O, C, kh, kw]; output [B, O, Ho, Wo].
Sampling semantics match DCN: a tap at a fractional position is the bilinear blend of its four
neighbours, neighbours outside the image count as zero.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None = None, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """Modulated deformable convolution (groups = 1, any number of deformable groups)."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    B, C, H, W = x.shape
    O, _, kh, kw = weight.shape
    taps = kh * kw
    Ho, Wo = offset.shape[-2:]
    dg = offset.shape[1] // (2 * taps)
    if offset.shape[1] != 2 * dg * taps or mask.shape[1] != dg * taps or C % dg:
        raise ValueError(f"deform_conv2d: offset {tuple(offset.shape)} / mask {tuple(mask.shape)} do not fit "
                         f"{kh}x{kw} taps and {C} channels")
    dtype = offset.dtype
    rows = torch.arange(Ho, device=x.device, dtype=dtype) * sh - ph  # [Ho]
    cols = torch.arange(Wo, device=x.device, dtype=dtype) * sw - pw  # [Wo]
    ky = (torch.arange(kh, device=x.device, dtype=dtype) * dh).repeat_interleave(kw)  # [taps]
    kx = (torch.arange(kw, device=x.device, dtype=dtype) * dw).repeat(kh)  # [taps]
    off = offset.view(B, dg, taps, 2, Ho, Wo)
    sy = ky[:, None, None] + rows[None, :, None] + off[:, :, :, 0]  # [B, dg, taps, Ho, Wo]
    sx = kx[:, None, None] + cols[None, None, :] + off[:, :, :, 1]  # [B, dg, taps, Ho, Wo]
    # pixel index -> grid_sample's normalised coordinate (align_corners=False: pixel i spans [i, i+1))
    grid = torch.stack(((2 * sx + 1) / W - 1, (2 * sy + 1) / H - 1), dim=-1)  # [B, dg, taps, Ho, Wo, 2]
    grid = grid.view(B * dg, taps * Ho, Wo, 2)
    # sampling in float32: bf16 sample coordinates would be off by up to a pixel on large maps
    src = x.reshape(B * dg, C // dg, H, W).float()
    sampled = F.grid_sample(src, grid.float(), mode="bilinear", padding_mode="zeros",
                            align_corners=False)  # [B*dg, C/dg, taps*Ho, Wo]
    sampled = sampled.view(B, dg, C // dg, taps, Ho, Wo) * mask.view(B, dg, 1, taps, Ho, Wo).float()
    cols_ = sampled.view(B, C * taps, Ho * Wo)  # channel-major, tap-minor: matches weight.reshape(O, C*taps)
    # reshape, not view: evaluation may hold the weights in channels_last
    out = torch.matmul(weight.reshape(O, C * taps).to(cols_.dtype), cols_)  # [B, O, Ho*Wo]
    out = out.view(B, O, Ho, Wo)
    if bias is not None:
        out = out + bias.view(1, O, 1, 1).to(out.dtype)
    return out.to(x.dtype) if not torch.is_autocast_enabled(x.device.type) else out


class DeformConv2d(nn.Module):
    """DCNv2 layer: `weight` has the shape of the plain conv it replaces, so ImageNet weights load into it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, deformable_groups: int = 1, bias: bool = True):
        super().__init__()
        if in_channels % deformable_groups:
            raise ValueError(f"in_channels {in_channels} not divisible by deformable_groups {deformable_groups}")
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        taps = kernel_size * kernel_size
        self.conv_offset = nn.Conv2d(in_channels, 3 * deformable_groups * taps, kernel_size, stride,
                                     padding, dilation)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.reset_offsets()

    def reset_offsets(self) -> None:
        """Zero offsets and a 0.5 modulation everywhere: the regular grid, as a fresh DCNv2 starts."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        om = self.conv_offset(x)  # [B, 3*dg*taps, Ho, Wo]
        n_off = om.shape[1] * 2 // 3
        offset, mask = om[:, :n_off], om[:, n_off:].sigmoid()
        return deform_conv2d(x, offset.float(), mask, self.weight, self.bias, self.stride, self.padding,
                             self.dilation)
