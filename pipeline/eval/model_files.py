"""A model from a config or from a checkpoint's files: what evaluation and training both need.

A checkpoint directory (`pipeline.train.checkpoint`) holds `model.pt`, the plain `state_dict` of
the unwrapped model (what MLflow keeps, what `jobs.evaluate` and fine-tuning read), and
`config.json`, the resolved `Config` that rebuilds the model without guessing. Training state
(optimizer, schedule, RNG) lives beside them and is training's business alone.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model import build_yolact
from pipeline.config import Config, resolve_anchor_grid

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP (or any `.module`) wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def build_model(cfg: Config, *, load_pretrained: bool = True) -> nn.Module:
    """YOLACT for `cfg` (anchor grid resolved from the assigner), optionally fine-tune-loaded."""
    grid = resolve_anchor_grid(cfg.model, cfg.train.assigner)
    model = build_yolact(cfg.model, anchor_grid=grid, load_weights=load_pretrained)
    if load_pretrained and cfg.train.init_from:
        report = load_weights(model, cfg.train.init_from)
        log.info("init_from %s: %d tensors loaded, %d of another shape kept fresh (%s)",
                 cfg.train.init_from, len(report["loaded"]), len(report["skipped"]),
                 ", ".join(report["skipped"][:6]))
    return model


def read_config(path: str | Path) -> dict[str, Any]:
    """The `config.json` of a checkpoint directory (or of the directory holding a model.pt)."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    file = directory / CONFIG_FILE
    if not file.is_file():
        raise ValueError(f"checkpoint {path} has no {CONFIG_FILE} next to its weights")
    return json.loads(file.read_text())


def model_file(path: str | Path) -> Path:
    """`path` itself when it is a weights file, else `path/model.pt`."""
    path = Path(path).expanduser()
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"checkpoint {path}: no weights file {file}")
    return file


def load_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Fine-tuning load: copy every tensor whose name and shape match, report the rest.

    A checkpoint trained with another class count differs only in the class and semantic heads,
    which keep their fresh initialisation. Returns {"loaded", "skipped" (shape differs),
    "missing" (not in the file), "unexpected" (not in the model)}.
    """
    src = torch.load(model_file(path), map_location="cpu", weights_only=True)
    dst = unwrap(model).state_dict()
    keep = {k: v for k, v in src.items() if k in dst and dst[k].shape == v.shape}
    if not keep:
        raise ValueError(f"checkpoint {path} shares no tensor (name and shape) with the model")
    unwrap(model).load_state_dict(keep, strict=False)
    return {"loaded": sorted(keep),
            "skipped": sorted(k for k in src if k in dst and dst[k].shape != src[k].shape),
            "missing": sorted(k for k in dst if k not in src),
            "unexpected": sorted(k for k in src if k not in dst)}
