"""A model from a config or from a checkpoint's files: what evaluation and training both need.

A checkpoint directory (`pipeline.train.checkpoint`) holds `model.pt`, the plain `state_dict` of
the unwrapped model (what MLflow keeps, what `jobs.evaluate` and fine-tuning read), and
`config.json`, the resolved `Config` that rebuilds the model without guessing. Training state
(optimizer, schedule, RNG) lives beside them and is training's business alone.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model import build_yolact
from pipeline.config import Config, resolve_anchor_grid
from pipeline.config_files import resolve_config
from pipeline.data.datasets import check_paths

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
SEMANTIC_WEIGHT = "semantic_head.conv.weight"  # [C, F, 1, 1]: the class count of a state_dict
ZIP_MAGIC = b"PK\x03\x04"  # what torch.save writes since PyTorch 1.6
PICKLE_MAGIC = b"\x80"  # a legacy (pre-1.6) torch.save file: a pickle, protocol 2 or later


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


def model_file(path: str | Path) -> Path:
    """`path` itself when it is a file, else `path/model.pt`; a clear error when neither exists."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"checkpoint {path} does not exist")
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"{path} is not a checkpoint: it holds no {MODEL_FILE} (a checkpoint directory "
                         f"holds {MODEL_FILE} and {CONFIG_FILE}; MLflow keeps them as checkpoint/{MODEL_FILE} "
                         f"and config/{CONFIG_FILE})")
    return file


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint (`weights_only`: no code runs), or a one-line error saying why not."""
    file = model_file(path)
    with open(file, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if not head.startswith(ZIP_MAGIC) and not head.startswith(PICKLE_MAGIC):
        raise ValueError(f"{file} is not a PyTorch weights file: it starts with {head!r}, not as "
                         "torch.save writes (a zip archive, or a legacy pickle)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip and runtime errors for bad files
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:200]
        raise ValueError(f"{file} is a corrupt or truncated PyTorch weights file: {reason}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{file} holds no state_dict (a mapping of tensor names to tensors)")
    return state


def read_config(path: str | Path) -> dict[str, Any]:
    """The resolved config of a checkpoint: `config.json` beside its weights, or, for a `model.pt`
    downloaded from MLflow (`checkpoint/model.pt`), the run's `config/config.json`."""
    file = model_file(path)
    places = [file.parent / CONFIG_FILE, file.parent.parent / "config" / CONFIG_FILE]
    found = next((p for p in places if p.is_file()), None)
    if found is None:
        raise ValueError(f"checkpoint {path}: config not found (looked for {' and '.join(map(str, places))})")
    try:
        return json.loads(found.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{found} is not valid JSON: {e}") from None


def fit_weights(model: nn.Module, state: dict[str, torch.Tensor], cfg: Config, where: str) -> nn.Module:
    """`model` (built from `cfg`) with the checkpoint's `state`; a one-line error when they differ."""
    if SEMANTIC_WEIGHT in state and state[SEMANTIC_WEIGHT].shape[0] != cfg.model.num_classes:
        raise ValueError(f"checkpoint {where}: its weights have {state[SEMANTIC_WEIGHT].shape[0]} classes, "
                         f"its config model.num_classes={cfg.model.num_classes} (a config of another run?)")
    try:
        unwrap(model).load_state_dict(state)
    except RuntimeError as e:  # names or shapes differ from the model its config builds
        raise ValueError(f"checkpoint {where} does not fit the model of its config: "
                         f"{(str(e).splitlines() or [''])[0][:300]}") from None
    return model


def checkpoint_config(path: str | Path, *, data_dir: str | None = None, config_file: str | None = None,
                      overrides: list[str] = ()) -> Config:
    """A checkpoint's own config, then `data_dir`, then a YAML file's values, then the `--set`s."""
    cfg = Config.from_dict(read_config(path))
    if data_dir is not None:
        cfg = replace(cfg, data=replace(cfg.data, data_dir=data_dir))
    return resolve_config(cfg, config_file, list(overrides))


def load_checkpoint(path: str | Path, data_dir: str | None = None, overrides: list[str] = (),
                    config_file: str | None = None) -> tuple[Config, nn.Module]:
    """(config, model on the CPU) of a checkpoint of ours: its own config, then `data_dir`, then a
    YAML file's values, then the `--set` `overrides`, its dataset paths checked, its weights loaded strictly. Every problem with the
    inputs (no such path, not a checkpoint, a corrupt file, no config, weights of another model, a
    dataset that is not there) is a one-line `ValueError` before any work starts."""
    state = read_state_dict(path)
    cfg = checkpoint_config(path, data_dir=data_dir, config_file=config_file, overrides=overrides)
    check_paths(cfg.data)
    return cfg, fit_weights(build_model(cfg, load_pretrained=False), state, cfg, str(path))


def load_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Fine-tuning load: copy every tensor whose name and shape match, report the rest.

    A checkpoint trained with another class count differs only in the class and semantic heads,
    which keep their fresh initialisation. Returns {"loaded", "skipped" (shape differs),
    "missing" (not in the file), "unexpected" (not in the model)}.
    """
    src = read_state_dict(path)
    dst = unwrap(model).state_dict()
    keep = {k: v for k, v in src.items() if k in dst and dst[k].shape == v.shape}
    if not keep:
        raise ValueError(f"checkpoint {path} shares no tensor (name and shape) with the model")
    unwrap(model).load_state_dict(keep, strict=False)
    return {"loaded": sorted(keep),
            "skipped": sorted(k for k in src if k in dst and dst[k].shape != src[k].shape),
            "missing": sorted(k for k in dst if k not in src),
            "unexpected": sorted(k for k in src if k not in dst)}
