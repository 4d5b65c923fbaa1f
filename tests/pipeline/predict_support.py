"""A tiny checkpoint and a few images for the predict and export tests (not a test module)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.config import Config, apply_overrides
from pipeline.eval.model_files import CONFIG_FILE, MODEL_FILE, build_model
from pipeline.presets import get_preset

SCALE = 96
IMAGE_SIZES = ((80, 120), (100, 90), (64, 64))  # (h, w): not the network's, not all the same


def tiny_predict_config(*overrides: str) -> Config:
    """The `tiny` preset's ResNet-18 YOLACT (4 synthetic classes) slimmed to S = 96."""
    return apply_overrides(get_preset("tiny"), [f"data.scale={SCALE}", "model.fpn_channels=32",
                                                "model.num_protos=8", *overrides])


def save_tiny_checkpoint(directory: Path, *overrides: str, seed: int = 0) -> Path:
    """Random (seeded) weights + config.json: the checkpoint layout of `pipeline.train.checkpoint`."""
    cfg = tiny_predict_config(*overrides)
    torch.manual_seed(seed)
    model = build_model(cfg, load_pretrained=False)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / MODEL_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(cfg.to_dict()))
    return directory


def write_images(folder: Path, sizes=IMAGE_SIZES, suffix: str = ".png", seed: int = 0) -> list[Path]:
    """Smooth random RGB images (a few bright rectangles on noise) named img0, img1, …"""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        for _ in range(3):
            y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
            image[y:y + h // 3, x:x + w // 3] = rng.integers(120, 255, 3, dtype=np.uint8)
        path = folder / f"img{i}{suffix}"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths
