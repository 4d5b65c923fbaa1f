"""model.fold: batch norm folded into the convolutions, conv weights cast once (the bf16 inference route)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from model import Yolact
from model.backbone import FrozenBatchNorm2d
from model.fold import cast_conv_weights, fold_batchnorm

NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)
OUTPUTS = ("cls", "box", "coef", "proto")


def _net(**options) -> Yolact:
    """A small model whose norms do something: random statistics and affine parameters."""
    torch.manual_seed(0)
    net = Yolact(3, "resnet18", "atss", fpn_channels=16, num_protos=4, **options).eval()
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, NORMS):
            c = m.running_mean.numel()
            m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=g))
    return net


def _count(net: nn.Module, kinds) -> int:
    return sum(isinstance(m, kinds) for m in net.modules())


@pytest.mark.parametrize("frozen_bn", [False, True])
def test_folding_keeps_the_outputs_and_leaves_the_model_alone(frozen_bn):
    net = _net(frozen_bn=frozen_bn)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    assert _count(net, NORMS) == 20 and _count(folded, NORMS) == 0  # R18: stem 1 + 8 blocks × 2 + 3 downsamples
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the original is untouched
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref, out = net(x), folded(x)
    for key in OUTPUTS:  # equal in exact arithmetic: float rounding only
        torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-4)


def test_a_norm_after_a_deformable_conv_stays():
    net = _net(dcn_interval=1, dcn_groups=1)  # every block's conv2 is deformable: its bn2 is not folded
    folded = fold_batchnorm(net)
    assert _count(folded, NORMS) == 6  # DCN in C3–C5 (dcn_stages): 2 blocks × 3 stages
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref, out = net(x), folded(x)
    for key in OUTPUTS:
        torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-4)


def test_weights_cast_once_equal_autocast_casting_them_on_every_call():
    net = fold_batchnorm(_net())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = net(x)
        out = cast_conv_weights(net, torch.bfloat16)(x)
    assert all(m.weight.dtype == torch.bfloat16 for m in net.modules() if type(m) is nn.Conv2d)
    for key in OUTPUTS:
        assert torch.equal(out[key], ref[key]), key
