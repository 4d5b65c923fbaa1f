"""Training checkpoints (the contents of one Ray Train checkpoint directory) and weight loading.

A checkpoint directory holds
  model.pt     the plain `state_dict` of the unwrapped model: what MLflow keeps, what
               `jobs.evaluate` and fine-tuning (`train.init_from`) read
  state.pt     {"optimizer", "scheduler", "progress": {iteration, epoch, train_time,
               skipped_steps, resumes}, "rng": [per-rank RNG states]}
  config.json  the resolved `Config` (to rebuild the model without guessing)
and, for the final one, the evaluation outputs the trainer adds (metrics.json, COCO results,
overlays).

RNG states are stored as plain tensors/ints so that `torch.load(weights_only=True)` reads them.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.eval.model_files import CONFIG_FILE, MODEL_FILE, unwrap

STATE_FILE = "state.pt"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU, CUDA when present)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                       "has_gauss": has_gauss, "gauss": gauss},
             "python": {"version": version, "state": list(py_state), "gauss": py_gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: str | Path, *, model: nn.Module, optimizer, scheduler,
                    progress: dict[str, Any], rng: list[dict[str, Any]],
                    config: dict[str, Any]) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(unwrap(model).state_dict(), directory / MODEL_FILE)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "progress": dict(progress), "rng": rng}, directory / STATE_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    return directory


def load_checkpoint(directory: str | Path, *, model: nn.Module, optimizer=None, scheduler=None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Restore model (+ optimizer and scheduler when given); returns {"progress", "rng"}."""
    directory = Path(directory)
    unwrap(model).load_state_dict(torch.load(directory / MODEL_FILE, map_location=map_location,
                                             weights_only=True))
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    return {"progress": state["progress"], "rng": state["rng"]}
