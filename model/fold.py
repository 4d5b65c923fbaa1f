"""An inference copy of a model: batch norm folded into the convolution before it, weights cast once.

In eval mode a batch norm is a per-channel affine map, y = (x − mean)·γ/√(var + ε) + β, so it
can be folded into the convolution that feeds it: W' = W·s, b' = (b − mean)·s + β with
s = γ/√(var + ε). That removes one pass over every backbone activation (53 of them in R50) and,
under bf16 autocast, the casts around each norm (autocast runs norms in fp32). Equal in exact
arithmetic; in float the folded weights round differently, so this is used on the bf16 route
only (`pipeline.eval.evaluate.inference_setup`), whose rounding is far coarser, and the fp32
route stays the reference, digit for digit.

`cast_conv_weights` stores the convolutions' weights in the autocast dtype once, instead of
autocast casting all of them on every call: the same values (autocast casts the same fp32
tensors to the same dtype), one copy fewer per convolution per call.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from model.backbone import BasicBlock, Bottleneck, FrozenBatchNorm2d, ResNet

# (convolution, the norm applied directly to its output) by attribute name, in our ResNet blocks
BLOCK_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))
NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _fold_pair(conv: nn.Conv2d, norm: nn.Module) -> None:
    scale = norm.weight.detach() * (norm.running_var + norm.eps).rsqrt()  # [C]
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(norm.running_mean)
    conv.weight = nn.Parameter(conv.weight.detach() * scale.view(-1, 1, 1, 1), requires_grad=False)
    conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias.detach(), requires_grad=False)


def _pairs(module: nn.Module) -> list[tuple[str, str]]:
    """Names (conv, norm) of `module`'s children where the norm is applied to the conv's output."""
    if isinstance(module, (ResNet, BasicBlock, Bottleneck)):
        return list(BLOCK_PAIRS)
    if isinstance(module, nn.Sequential):  # runs in order: child i feeds child i + 1
        names = list(module._modules)
        return list(zip(names, names[1:]))
    return []


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with every plain convolution → norm pair of the backbone
    folded (the norm replaced by `nn.Identity`); `model` itself is left as it is."""
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        for conv_name, norm_name in _pairs(module):
            conv, norm = module._modules.get(conv_name), module._modules.get(norm_name)
            if type(conv) is nn.Conv2d and isinstance(norm, NORMS):
                _fold_pair(conv, norm)
                module._modules[norm_name] = nn.Identity()
    return folded


def cast_conv_weights(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """`model` (in place) with every `nn.Conv2d`'s weight and bias stored in `dtype`."""
    for m in model.modules():
        if type(m) is nn.Conv2d:
            m.weight = nn.Parameter(m.weight.detach().to(dtype), requires_grad=False)
            if m.bias is not None:
                m.bias = nn.Parameter(m.bias.detach().to(dtype), requires_grad=False)
    return model
