"""Network: parameter counts against the reference numbers, output shapes for every option, building blocks."""

import pytest
import torch
import torch.nn.functional as F

from model import Yolact, build_yolact, parameter_summary
from model.anchors import count_anchors, pyramid_sizes
from model.backbone import FrozenBatchNorm2d, ResNet
from model.dcn import DeformConv2d, deform_conv2d
from model.fpn import CARAFE, CarafeFPN, carafe

SMALL = dict(backbone="resnet18", fpn_channels=16, num_protos=8)


def test_parameter_count_mmdet_yolact_r50():
    counts = parameter_summary(Yolact(80, "resnet50", "yolact"))
    assert counts["total"] == 35_293_711
    # the component split of the reference (official numbers; FPN = official + the C5-fed P6 conv)
    assert counts["backbone"] == 23_508_032 and counts["protonet"] == 2_368_544
    assert counts["head"] == 1_399_135 and counts["semantic_head"] == 20_560
    assert counts["fpn"] == 3_868_672 + 4_128_768
    assert counts["inference"] == 35_293_711 - 20_560


def test_parameter_counts_of_options():
    atss = parameter_summary(Yolact(80, "resnet50", "atss"))
    assert atss["head"] == 859_765 and atss["total"] == 34_754_341
    pp = parameter_summary(Yolact(80, "resnet50", "yolact", scales_per_level=3, dcn_interval=1,
                                  mask_rescoring=True))
    # official YOLACT++ R50: DCN in all 13 blocks of C3–C5, 9 anchors per location, re-scoring net
    assert pp["backbone"] == 24_382_879 and pp["head"] == 3_017_245 and pp["mask_iou_net"] == 108_560


def test_dcn_bias_follows_the_layout_it_reproduces():
    # maYOLACT-550 R50 in mmdetection's layout (mmcv's DCNv2 has no bias): CARAFE FPN, DCNv2 with
    # 4 deformable groups in every block of C3–C5, 2 anchors per location
    mayolact = dict(anchor_grid="mayolact", carafe=True, dcn_interval=1, dcn_groups=4)
    assert parameter_summary(Yolact(80, "resnet50", **mayolact, dcn_bias=False))["total"] == 39_985_830
    # dbolya's YOLACT++ DCN carries a bias: 13 DCNs of 128·4 + 256·6 + 512·3 output channels more
    with_bias = parameter_summary(Yolact(80, "resnet50", **mayolact))["total"]
    assert with_bias - 39_985_830 == 128 * 4 + 256 * 6 + 512 * 3


def test_r101_interval_three_places_eleven_dcns():
    net = ResNet("resnet101", dcn_interval=3)
    assert sum(isinstance(m, DeformConv2d) for m in net.modules()) == 11
    assert sum(p.numel() for p in net.parameters()) == 43_187_561  # official yolact_plus_base backbone


@pytest.mark.parametrize("options,per_loc", [
    (dict(anchor_grid="yolact"), 3), (dict(anchor_grid="atss"), 1), (dict(anchor_grid="mayolact"), 2),
    (dict(anchor_grid="yolact", scales_per_level=3, dcn_interval=1, mask_rescoring=True), 9),
    (dict(anchor_grid="mayolact", carafe=True, dcn_interval=1, dcn_groups=4), 2),
    (dict(anchor_grid="atss", sipmask=True), 1),
])
def test_output_shapes(options, per_loc):
    torch.manual_seed(0)
    S, C = 96, 3
    net = Yolact(C, **SMALL, **options)
    out = net(torch.randn(2, 3, S, S))
    A = count_anchors(options["anchor_grid"], pyramid_sizes(S), options.get("scales_per_level", 1))
    assert A == sum(h * w for h, w in pyramid_sizes(S)) * per_loc
    assert out["cls"].shape == (2, A, C + 1) and out["box"].shape == (2, A, 4)
    coef_shape = (2, A, 4, 8) if options.get("sipmask") else (2, A, 8)
    assert out["coef"].shape == coef_shape and out["coef"].abs().max() <= 1
    h3 = pyramid_sizes(S)[0][0]
    assert out["proto"].shape == (2, 8, 2 * h3, 2 * h3) and out["proto"].min() >= 0
    assert out["sem"].shape == (2, C, h3, h3)
    assert out["anchors"].shape == (A, 4) and sum(out["num_anchors_per_level"]) == A
    assert ("mask_iou_net" in out) == bool(options.get("mask_rescoring"))
    net.eval()
    with torch.no_grad():
        assert "sem" not in net(torch.randn(1, 3, S, S))


def test_backbone_sizes_and_stride_layouts():
    for s1 in (False, True):
        net = ResNet("resnet50", stride_in_1x1=s1)
        s3 = [m.stride for m in (net.layer2[0].conv1, net.layer2[0].conv2)]
        assert s3 == ([(2, 2), (1, 1)] if s1 else [(1, 1), (2, 2)])
        for S in (37, 64):  # odd sizes exercise the floor arithmetic
            with torch.no_grad():
                feats = net(torch.randn(1, 3, S, S))
            assert [f.shape[-1] for f in feats] == [h for h, _ in pyramid_sizes(S)[:3]]
            assert [f.shape[1] for f in feats] == [512, 1024, 2048]


def test_frozen_bn_is_a_fixed_affine_map_with_bn_keys():
    frozen, trained = ResNet("resnet18", frozen_bn=True), ResNet("resnet18")
    assert frozen.state_dict().keys() == trained.state_dict().keys()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    bn = FrozenBatchNorm2d(4)
    bn.weight.copy_(torch.tensor([1.0, 2, 3, 4]))
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    x = torch.randn(2, 4, 3, 3)
    ref = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    torch.testing.assert_close(bn(x), ref)
    frozen.load_state_dict(trained.state_dict(), strict=True)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_deform_conv_with_zero_offsets_is_conv(stride, padding, dilation):
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 6, 9, 11), torch.randn(5, 6, 3, 3), torch.randn(5)
    ref = F.conv2d(x, w, b, stride, padding, dilation)
    Ho, Wo = ref.shape[-2:]
    for dg in (1, 2):
        out = deform_conv2d(x, torch.zeros(2, 2 * dg * 9, Ho, Wo), torch.ones(2, dg * 9, Ho, Wo), w, b,
                            stride, padding, dilation)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def _bilinear(img, y, x):
    """DCN's bilinear sample of img [C,H,W] at (y, x), neighbours outside the image are zero."""
    H, W = img.shape[-2:]
    y0, x0 = int(torch.floor(torch.tensor(y))), int(torch.floor(torch.tensor(x)))
    val = torch.zeros(img.shape[0], dtype=torch.float64)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < H and 0 <= xx < W:
                val += (1 - abs(y - yy)) * (1 - abs(x - xx)) * img[:, yy, xx]
    return val


def test_deform_conv_matches_brute_force_sampling():
    torch.manual_seed(1)
    B, C, H, W, O, dg = 1, 4, 5, 6, 3, 2
    x, w = torch.randn(B, C, H, W, dtype=torch.float64), torch.randn(O, C, 3, 3, dtype=torch.float64)
    offset = 1.5 * torch.randn(B, 2 * dg * 9, H, W, dtype=torch.float64)
    mask = torch.rand(B, dg * 9, H, W, dtype=torch.float64)
    out = deform_conv2d(x, offset, mask, w, None, 1, 1, 1)
    ref = torch.zeros(B, O, H, W, dtype=torch.float64)
    off = offset.view(B, dg, 9, 2, H, W)
    for i in range(H):
        for j in range(W):
            for g in range(dg):
                chans = slice(g * C // dg, (g + 1) * C // dg)
                for t in range(9):
                    y = i - 1 + t // 3 + off[0, g, t, 0, i, j].item()
                    xx = j - 1 + t % 3 + off[0, g, t, 1, i, j].item()
                    v = _bilinear(x[0, chans], y, xx) * mask[0, g * 9 + t, i, j]
                    ref[0, :, i, j] += w[:, chans, t // 3, t % 3] @ v
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-4)


def test_fresh_dcn_layer_is_half_a_conv():
    layer = DeformConv2d(4, 5, 3, 1, 1)
    x = torch.randn(1, 4, 7, 7)
    torch.testing.assert_close(layer(x), 0.5 * F.conv2d(x, layer.weight, None, 1, 1) + layer.bias.view(1, -1, 1, 1))


def test_carafe_matches_brute_force():
    torch.manual_seed(2)
    B, C, h, w, k, s = 1, 3, 3, 4, 3, 2
    x = torch.randn(B, C, h, w, dtype=torch.float64)
    kern = torch.rand(B, k * k, h * s, w * s, dtype=torch.float64)
    out = carafe(x, kern, k, s)
    ref = torch.zeros(B, C, h * s, w * s, dtype=torch.float64)
    for Y in range(h * s):
        for X in range(w * s):
            for t in range(k * k):
                yy, xx = Y // s + t // k - k // 2, X // s + t % k - k // 2
                if 0 <= yy < h and 0 <= xx < w:
                    ref[0, :, Y, X] += kern[0, t, Y, X] * x[0, :, yy, xx]
    torch.testing.assert_close(out, ref)
    up = CARAFE(C, 2, 5, 3, 4)(x.float())
    assert up.shape == (B, C, h * 2, w * 2)


def test_build_yolact_reads_config_by_attribute():
    from pipeline.config import ModelConfig

    cfg = ModelConfig(backbone="resnet18", frozen_bn=True, num_classes=5, fpn_channels=16, num_protos=8)
    with pytest.raises(ValueError, match="auto"):
        build_yolact(cfg)
    net = build_yolact(cfg, anchor_grid="mayolact")
    assert net.head.conv_cls.out_channels == 2 * 6 and net.anchor_grid == "mayolact"
    with pytest.raises(ValueError, match="images must be"):
        net(torch.randn(3, 64, 64))


@pytest.mark.parametrize("preset", ["tiny", "paper", "mayolact"])
def test_build_from_pipeline_presets(preset):
    from dataclasses import replace

    from pipeline.config import resolve_anchor_grid
    from pipeline.presets import get_preset

    cfg = get_preset(preset)
    small = replace(cfg.model, backbone="resnet18", fpn_channels=16, num_protos=8)
    net = build_yolact(small, anchor_grid=resolve_anchor_grid(small, cfg.train.assigner))
    dcns = sum(isinstance(m, DeformConv2d) for m in net.modules())
    assert dcns == (6 if cfg.model.dcn_interval else 0)  # ResNet-18: 2 blocks in each of C3–C5
    assert isinstance(net.fpn, CarafeFPN) == cfg.model.carafe
    out = net(torch.randn(1, 3, 64, 64))
    assert out["cls"].shape[-1] == cfg.model.num_classes + 1
