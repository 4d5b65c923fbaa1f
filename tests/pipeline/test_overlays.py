"""Overlays: a valid PNG of the image's size, masks blended in the class colour, nothing drawn
below the score threshold."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.eval.overlays import class_colour, draw_overlay, save_overlay
from tests.pipeline.coco_tiny import box_mask, make_prediction

H, W = 90, 130


def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def test_writes_png_of_the_image_size(tmp_path):
    mask = box_mask([60, 50, 100, 80], H, W)
    pred = make_prediction(1, (H, W), [([10, 20, 50, 60], 0.9, 0), ([60, 50, 100, 80], 0.6, 2, mask)])
    path = save_overlay(tmp_path / "sub" / "o.png", image(), pred, ["cat", "dog", "bird"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        assert (im.format, im.size, im.mode) == ("PNG", (W, H), "RGB")
        out = np.asarray(im)
    # Mask interior away from box edges and captions: alpha blend of the image and the colour.
    expected = (0.55 * image()[70, 80] + 0.45 * np.array(class_colour(2))).round()
    assert np.abs(out[70, 80].astype(float) - expected).max() <= 1
    assert np.array_equal(out[5:15, 110:125], image()[5:15, 110:125])  # untouched corner


def test_threshold_and_torch_inputs():
    pred = make_prediction(1, (H, W), [([10, 20, 50, 60], 0.1, 1)])
    as_torch = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in pred.items()}
    assert np.array_equal(np.asarray(draw_overlay(torch.as_tensor(image()), as_torch)), image())
    drawn = np.asarray(draw_overlay(image(), pred, score_thr=0.05))
    assert not np.array_equal(drawn, image())
    # A box at the top edge keeps its caption inside the image.
    top = make_prediction(1, (H, W), [([0, 0, 40, 30], 0.9, 1)])
    assert draw_overlay(image(), top).size == (W, H)


def test_empty_prediction_returns_the_image():
    assert np.array_equal(np.asarray(draw_overlay(image(), make_prediction(1, (H, W), []))), image())


def test_bad_inputs():
    pred = make_prediction(1, (H, W), [([10, 20, 50, 60], 0.9, 3)])
    with pytest.raises(ValueError, match="uint8 \\[H, W, 3\\]"):
        draw_overlay(image().astype(np.float32), pred)
    with pytest.raises(ValueError, match="do not match the image"):
        draw_overlay(image()[:50], pred)
    with pytest.raises(ValueError, match="label 3 has no name"):
        draw_overlay(image(), pred, ["a", "b"])
