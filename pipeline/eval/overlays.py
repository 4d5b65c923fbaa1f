"""Prediction overlays: image + semi-transparent masks + boxes + "label score" captions, as PNG.

Input: the original image `uint8 [H, W, 3]` (RGB) and one post-processed prediction at the same
size — `boxes` [N,4] xyxy, `scores` [N], `labels` [N] contiguous, `masks` bool [N,H,W] (torch
tensors on any device, or numpy arrays). Detections below `score_thr` are not drawn; the rest
are drawn lowest score first, so the most confident ends on top. Each class has a fixed colour.
"""
from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.data.arrays import to_numpy

GOLDEN_RATIO = 0.618033988749895  # hue step that keeps consecutive class colours far apart
BOX_WIDTH = 2
TEXT_PAD = 2
LIGHT_LUMA = 140  # caption backgrounds brighter than this get black text
REC601_LUMA = (0.299, 0.587, 0.114)  # R, G, B weights of perceived brightness
CLASS_SATURATION, CLASS_VALUE = 0.85, 0.95  # HSV of the class colours: vivid, not glaring


def class_colour(label: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((label * GOLDEN_RATIO) % 1.0, CLASS_SATURATION, CLASS_VALUE)
    return int(255 * r), int(255 * g), int(255 * b)


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light captions, white on dark ones (Rec. 601 luma)."""
    luma = sum(w * c for w, c in zip(REC601_LUMA, background))
    return (0, 0, 0) if luma > LIGHT_LUMA else (255, 255, 255)


def draw_overlay(image, prediction: dict, class_names: Sequence[str] | None = None, *,
                 score_thr: float = 0.3, alpha: float = 0.45) -> Image.Image:
    """The overlay as a PIL RGB image of the input's size."""
    img = to_numpy(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {img.dtype} {list(img.shape)}")
    h, w = img.shape[:2]
    scores = to_numpy(prediction["scores"]).astype(np.float64).reshape(-1)  # [N]
    boxes = to_numpy(prediction["boxes"]).astype(np.float64).reshape(-1, 4)  # [N, 4]
    labels = to_numpy(prediction["labels"]).astype(np.int64).reshape(-1)  # [N]
    masks = to_numpy(prediction["masks"]).astype(bool)  # [N, h, w]
    if masks.shape[1:] != (h, w) or len(masks) != len(scores):
        raise ValueError(f"prediction masks {list(masks.shape)} do not match the image {h}x{w} "
                         f"and {len(scores)} scores")
    if class_names is not None and len(labels) and labels.max() >= len(class_names):
        raise ValueError(f"label {labels.max()} has no name: class_names has {len(class_names)} entries")
    order = [i for i in np.argsort(scores, kind="stable") if scores[i] >= score_thr]

    canvas = img.astype(np.float32)
    for i in order:
        colour = np.array(class_colour(int(labels[i])), dtype=np.float32)
        canvas[masks[i]] = (1.0 - alpha) * canvas[masks[i]] + alpha * colour
    out = Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8), mode="RGB")

    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for i in order:
        colour = class_colour(int(labels[i]))
        x0, y0, x1, y1 = boxes[i].tolist()
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=BOX_WIDTH)
        name = class_names[labels[i]] if class_names is not None else str(int(labels[i]))
        text = f"{name} {scores[i]:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * TEXT_PAD, bottom - top + 2 * TEXT_PAD
        y_cap = y0 - th if y0 - th >= 0 else y0  # above the box, or inside it at the top edge
        draw.rectangle([x0, y_cap, x0 + tw, y_cap + th], fill=colour)
        draw.text((x0 + TEXT_PAD - left, y_cap + TEXT_PAD - top), text, fill=_text_colour(colour), font=font)
    return out


def save_overlay(path: str | Path, image, prediction: dict, class_names: Sequence[str] | None = None,
                 **kwargs) -> Path:
    """Draw the overlay and write it as PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_overlay(image, prediction, class_names, **kwargs).save(path, format="PNG")
    return path
