"""A model ready to predict on images that have no annotations: `jobs.predict`'s and `jobs.export`'s.

`Predictor(run, info, device, source)`: `run(images float32 [B, 3, S, S] on device)` returns the raw
output dict of `Yolact.forward` (what `model.postprocess` takes), and `info` (`ModelInfo`) says what
the network alone does not: the input scale S, the training dataset's categories (contiguous label
l is category `category_ids[l]` named `category_names[l]`), the anchor grid and the post-processing
parameters. The ONNX export (`pipeline.eval.export`) carries the same `ModelInfo` in its metadata,
so an exported model predicts without its checkpoint and gives the same detections.

`load_predictor(source, device)` accepts a checkpoint directory, a `model.pt` (also the MLflow
artifact `checkpoint/model.pt`, whose config is `config/config.json`), or an MLflow run id
(its `checkpoint/model.pt` and `config/config.json` are downloaded through `pipeline.tracking`).
Weights of another class count than the config's are refused with both counts, before any work.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.anchors import make_anchors, pyramid_sizes
from pipeline.config import Config, EvalConfig, TrackingConfig, resolve_anchor_grid
from pipeline.data.augment import AugmentParams, transform
from pipeline.data.coco import read_json
from pipeline.data.coco_checks import valid_categories
from pipeline.data.datasets import split_paths
from pipeline.data.synthetic import categories as synthetic_categories
from pipeline.eval.model_files import (CONFIG_FILE, MODEL_FILE, build_model, fit_weights, read_config,
                                       read_state_dict)
from pipeline.eval.runtime import inference_autocast, inference_model, inference_precision

log = logging.getLogger(__name__)

RUN_ID = re.compile(r"(?:runs:/)?([0-9a-f]{32})/?")  # MLflow run ids are 32 hex digits
RUN_ARTIFACTS = ("checkpoint/" + MODEL_FILE, "config/" + CONFIG_FILE)  # as `pipeline.train.run` logs them


@dataclass(frozen=True)
class ModelInfo:
    scale: int
    category_ids: tuple[int, ...]
    category_names: tuple[str, ...]
    anchor_grid: str
    scales_per_level: int
    yolact_550_strides: bool
    postprocess: EvalConfig

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelInfo":
        known = {f.name for f in dataclasses.fields(EvalConfig)}
        post = EvalConfig(**{k: v for k, v in d["postprocess"].items() if k in known})
        return cls(scale=int(d["scale"]), category_ids=tuple(int(i) for i in d["category_ids"]),
                   category_names=tuple(str(n) for n in d["category_names"]), anchor_grid=d["anchor_grid"],
                   scales_per_level=int(d["scales_per_level"]),
                   yolact_550_strides=bool(d["yolact_550_strides"]), postprocess=post)


@dataclass
class Predictor:
    run: Callable[[torch.Tensor], dict]
    info: ModelInfo
    device: torch.device
    source: str  # what was loaded, for messages and the summary
    model: nn.Module | None = None  # the torch network behind `run` (None for ONNX Runtime)


def dataset_categories(cfg: Config) -> tuple[list[int], list[str]]:
    """(category ids, names) in label order of the dataset `cfg` was trained on.

    The built-in synthetic set's are fixed; a COCO-format set's are read from its annotations
    (only the JSON: the images need not be there). Without the annotations, ids 1..C and names
    "class <id>" stand in, with a warning."""
    C = cfg.model.num_classes
    if not cfg.data.data_dir:
        cats = synthetic_categories()
    else:
        json_path = split_paths(cfg.data, "val")[0]
        if not os.path.isfile(json_path):
            log.warning("%s not found: categories are numbered 1..%d without names", json_path, C)
            return list(range(1, C + 1)), [f"class {i}" for i in range(1, C + 1)]
        kept, _ = valid_categories(read_json(json_path)["categories"], json_path)
        cats = sorted(kept.values(), key=lambda c: c["id"])  # label order, as `load_coco`
    if len(cats) != C:
        raise ValueError(f"the training dataset has {len(cats)} categories, the checkpoint's config "
                         f"model.num_classes={C}")
    return [int(c["id"]) for c in cats], [str(c["name"]) for c in cats]


def model_info(cfg: Config, scale: int | None = None) -> ModelInfo:
    """What predicting with `cfg`'s model needs besides the weights; `scale` overrides the input size."""
    ids, names = dataset_categories(cfg)
    return ModelInfo(scale=int(scale or cfg.data.scale), category_ids=tuple(ids), category_names=tuple(names),
                     anchor_grid=resolve_anchor_grid(cfg.model, cfg.train.assigner),
                     scales_per_level=cfg.model.scales_per_level,
                     yolact_550_strides=cfg.model.yolact_550_strides, postprocess=cfg.eval)


def network_input(image, scale: int) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> float32 [3, S, S]: evaluation's resize and normalisation."""
    return torch.from_numpy(transform(image, [], [], [], AugmentParams(scale=scale, train=False)).image)


def complete_output(raw: dict[str, torch.Tensor], info: ModelInfo) -> dict:
    """The raw network outputs {cls, box, coef, proto} + the anchors and sizes `postprocess` needs."""
    S = info.scale
    anchors, counts = make_anchors(info.anchor_grid, pyramid_sizes(S), (S, S), info.scales_per_level,
                                   info.yolact_550_strides, torch.float32, raw["cls"].device)
    if anchors.shape[0] != raw["cls"].shape[1]:
        raise ValueError(f"the network gives {raw['cls'].shape[1]} anchors, the {info.anchor_grid} grid "
                         f"at {S} px has {anchors.shape[0]}")
    return dict(raw, anchors=anchors, num_anchors_per_level=list(counts), image_size=(S, S))


def resolve_checkpoint(source: str, dst: Path, tracking: TrackingConfig) -> Path:
    """A local checkpoint path for `source`: itself when it exists, else an MLflow run's artifacts
    downloaded under `dst`."""
    match = RUN_ID.fullmatch(str(source))
    if Path(source).expanduser().exists() or match is None:
        return Path(source).expanduser()
    from pipeline.tracking import download_artifact, resolve_tracking_uri  # MLflow only for run ids

    for artifact in RUN_ARTIFACTS:  # kept in their folders: `read_config` finds config/ from checkpoint/
        if download_artifact(tracking, match.group(1), artifact, dst / Path(artifact).parent) is None:
            raise ValueError(f"MLflow run {match.group(1)} has no artifact {artifact} (tracking URI "
                             f"{resolve_tracking_uri(tracking)}; is it a finished training run?)")
    return dst / RUN_ARTIFACTS[0]


def load_predictor(source: str, device: str | torch.device = "cpu", *, scale: int | None = None,
                   tracking: TrackingConfig | None = None, precision: str | None = None) -> Predictor:
    """The model of a checkpoint, in eval mode on `device` (see the module docstring), running in
    `precision` ("bf16" | "fp32"; by default the checkpoint's `eval.precision`, as evaluation)."""
    with tempfile.TemporaryDirectory(prefix="maskaware-run-") as tmp:
        path = resolve_checkpoint(source, Path(tmp), tracking or TrackingConfig())
        state = read_state_dict(path)
        cfg = Config.from_dict(read_config(path))
    dev = torch.device(device)
    model = fit_weights(build_model(cfg, load_pretrained=False), state, cfg, source).eval().to(dev)
    precision = inference_precision(dev, cfg.train.amp, precision or cfg.eval.precision)
    net = inference_model(model, precision)  # as evaluation runs it

    @torch.no_grad()
    def run(images: torch.Tensor) -> dict:
        with inference_autocast(dev, precision):
            return net(images)

    return Predictor(run=run, info=model_info(cfg, scale), device=dev, source=f"checkpoint {source}",
                     model=model)
