import colorsys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from pipeline.data import augment as A
from pipeline.data import photometric as PH
from pipeline.data.coco import decode_masks, instance_rles, load_coco, load_image
from pipeline.data.scenes import render_scene


def _scene(seed: int, size: int = 96):
    image, masks, labels = render_scene(np.random.default_rng([7, 0, seed]), size)
    masks = np.stack(masks) if masks else np.zeros((0, size, size), dtype=bool)
    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    boxes = np.array([[np.flatnonzero(m.any(0))[0], np.flatnonzero(m.any(1))[0],
                       np.flatnonzero(m.any(0))[-1] + 1, np.flatnonzero(m.any(1))[-1] + 1] for m in masks],
                     dtype=np.float32).reshape(-1, 4)
    return image, masks, rles, np.array(labels, dtype=np.int64), boxes


def _expected_masks(sample: A.Sample, masks: np.ndarray) -> np.ndarray:
    """Brute force: every output pixel centre, mapped through the recorded affine (flip undone)."""
    s = sample.masks.shape[-1]
    ax, bx, ay, by = (float(v) for v in sample.affine)
    if sample.flipped:  # the unflipped map of column u is the flipped one of column S-1-u
        ax, bx = -ax, bx + ax * s
    # the float32 affine holds integer window corners and sizes: recover them exactly
    x0, y0, ww, wh = round(bx), round(by), round(ax * s), round(ay * s)
    h, w = sample.orig_size
    xs = np.floor(x0 + ww / s * (np.arange(s) + 0.5)).astype(int)
    ys = np.floor(y0 + wh / s * (np.arange(s) + 0.5)).astype(int)
    out = np.zeros((len(sample.keep), s, s), dtype=bool)
    okx, oky = (xs >= 0) & (xs < w), (ys >= 0) & (ys < h)
    for g, k in enumerate(sample.keep):
        out[g][np.ix_(oky, okx)] = masks[k][np.ix_(ys[oky], xs[okx])]
    return out[:, :, ::-1] if sample.flipped else out


def _check(sample: A.Sample, masks: np.ndarray, labels: np.ndarray, s: int, min_box: float):
    assert sample.image.shape == (3, s, s) and sample.image.dtype == np.float32
    g = len(sample.keep)
    assert sample.masks.shape == (g, s, s) and sample.boxes.shape == (g, 4)
    np.testing.assert_array_equal(sample.labels, labels[sample.keep])
    for m, box in zip(sample.masks, sample.boxes):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        assert rows.size, "an empty mask survived"
        tight = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        assert np.abs(box - tight).max() <= 1.0  # the box is the tight box of the mask
        assert box.min() >= 0 and box.max() <= s  # and inside the image
        assert box[2] - box[0] >= min_box and box[3] - box[1] >= min_box
    np.testing.assert_array_equal(sample.masks, _expected_masks(sample, masks))


def test_augmented_boxes_are_tight_mask_boxes_inside_the_image():
    params = A.AugmentParams(scale=80)
    flips = crops = 0
    for seed in range(40):
        image, masks, rles, labels, boxes = _scene(seed)
        sample = A.transform(image, rles, labels, boxes, params, np.random.default_rng(seed))
        _check(sample, masks, labels, 80, params.min_box_size)
        flips += sample.flipped
        crops += bool((sample.window != [0, 0, 96, 96]).any())
    assert 5 < flips < 35 and crops > 5  # the random steps do happen


def test_augment_real_photos(voc_mini):
    ds = load_coco(str(voc_mini / "annotations.json"), str(voc_mini))
    params = A.AugmentParams(scale=128)
    for r in ds.records:
        image, masks = load_image(r.path), decode_masks(r)
        for seed in range(4):
            sample = A.transform(image, instance_rles(r), r.labels, r.boxes, params, np.random.default_rng(seed))
            _check(sample, masks, r.labels, 128, params.min_box_size)


def test_deterministic_for_a_seed():
    image, _, rles, labels, boxes = _scene(3)
    params = A.AugmentParams(scale=64)
    a = A.transform(image, rles, labels, boxes, params, np.random.default_rng(11))
    b = A.transform(image, rles, labels, boxes, params, np.random.default_rng(11))
    for field in ("image", "boxes", "labels", "masks", "keep", "affine", "window"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    others = [A.transform(image, rles, labels, boxes, params, np.random.default_rng(s)) for s in range(12, 16)]
    assert any(not np.array_equal(a.image, o.image) for o in others)


def test_eval_is_a_plain_resize():
    image, masks, rles, labels, boxes = _scene(5, size=90)
    sample = A.transform(image, rles, labels, boxes, A.AugmentParams(scale=64, train=False))
    np.testing.assert_array_equal(sample.window, [0, 0, 90, 90])
    np.testing.assert_allclose(sample.affine, [90 / 64, 0, 90 / 64, 0])
    assert not sample.flipped
    # bilinear with half-pixel centres, as cv2 / F.interpolate(align_corners=False)
    src = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]  # [1, 3, H, W]
    ref = F.interpolate(src, size=(64, 64), mode="bilinear", align_corners=False)[0].numpy()
    ref = (ref - A.MEAN[:, None, None]) / A.STD[:, None, None]
    np.testing.assert_allclose(sample.image, ref, atol=1e-4)
    _check(sample, masks, labels, 64, 4.0)
    back = boxes_to_original(sample.boxes, sample.affine)
    np.testing.assert_allclose(back, boxes[sample.keep], atol=90 / 64 + 1e-4)
    soft = masks_to_original(torch.from_numpy(sample.masks).float(), (90, 90))
    assert soft.shape == (len(sample.keep), 90, 90)
    agree = ((soft > 0.5).numpy() == masks[sample.keep]).mean()
    assert agree > 0.97


def test_boxes_to_original_undoes_flip_and_crop():
    params = A.AugmentParams(scale=80, min_box_size=0)
    errors = []
    for seed in range(30):
        image, masks, rles, labels, boxes = _scene(seed)
        sample = A.transform(image, rles, labels, boxes, params, np.random.default_rng(seed))
        back = boxes_to_original(sample.boxes, sample.affine)
        half = np.abs(sample.affine[[0, 2, 0, 2]]) / 2  # half an output pixel, in original pixels
        for b, k in zip(back, sample.keep):
            # the visible part of the original mask inside the window: its tight box
            x1, y1, x2, y2 = sample.window
            part = np.zeros_like(masks[k])
            part[y1:y2, x1:x2] = masks[k][y1:y2, x1:x2]
            rows, cols = np.flatnonzero(part.any(1)), np.flatnonzero(part.any(0))
            tight = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)
            # every sampled pixel centre lies on the mask, so the box maps back inside the tight
            # box grown by half an output pixel (thin parts can be missed: no lower bound)
            assert (b[:2] >= tight[:2] - half[:2] - 1e-3).all() and (b[2:] <= tight[2:] + half[2:] + 1e-3).all()
            errors.append(np.abs(b - tight) / (2 * half))
    assert len(errors) > 30 and np.median(np.concatenate(errors)) <= 0.5


def test_expand_fills_with_the_mean():
    image, _, rles, labels, boxes = _scene(1)
    params = A.AugmentParams(scale=64, expand_prob=1.0, expand_ratio=(3.0, 3.0), crop_min_ious=(),
                             photometric=False)
    # modes are then (no crop, any crop): find a draw that keeps the whole canvas
    for seed in range(20):
        sample = A.transform(image, rles, labels, boxes, params, np.random.default_rng(seed))
        if (sample.affine[[0, 2]] == np.float32(3 * 96 / 64)).all():
            break
    ax, bx, ay, by = sample.affine
    xs = bx + ax * (np.arange(64) + 0.5)
    ys = by + ay * (np.arange(64) + 0.5)
    outside = ((xs < -1) | (xs > 97))[None, :] | ((ys < -1) | (ys > 97))[:, None]  # [S, S]
    assert outside.any() and (~outside).any()
    assert np.abs(sample.image[:, outside]).max() < 1e-6  # normalised mean = 0


def test_no_instances_is_fine():
    image = np.full((50, 60, 3), 100, dtype=np.uint8)
    for train in (True, False):
        sample = A.transform(image, [], np.zeros(0, np.int64), np.zeros((0, 4)), A.AugmentParams(scale=48, train=train),
                             np.random.default_rng(0))
        assert sample.masks.shape == (0, 48, 48) and sample.boxes.shape == (0, 4) and sample.labels.shape == (0,)
        assert np.isfinite(sample.image).all()


def test_min_iou_crop_respects_its_constraints():
    rng = np.random.default_rng(0)
    params = A.AugmentParams(scale=64)
    for _ in range(200):
        boxes = rng.uniform(0, 80, (3, 2))
        boxes = np.concatenate([boxes, boxes + rng.uniform(4, 40, (3, 2))], 1).astype(np.float32)  # [3, 4]
        patch, inside = A._min_iou_crop(rng, 120, 100, boxes, params)
        w, h = patch[2] - patch[0], patch[3] - patch[1]
        assert 0 <= patch[0] < patch[2] <= 120 and 0 <= patch[1] < patch[3] <= 100
        if (w, h) != (120, 100):
            assert 0.5 <= h / w <= 2 and w >= int(0.3 * 120) - 1 and h >= int(0.3 * 100) - 1
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2
            np.testing.assert_array_equal(inside, (centre[:, 0] > patch[0]) & (centre[:, 0] < patch[2])
                                          & (centre[:, 1] > patch[1]) & (centre[:, 1] < patch[3]))
            assert inside.any()


def _reference_hue(rgb: np.ndarray, degrees: float) -> np.ndarray:
    out = np.empty_like(rgb)
    for idx in np.ndindex(rgb.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*(rgb[idx] / 255.0))
        out[idx] = np.array(colorsys.hsv_to_rgb((h + degrees / 360.0) % 1.0, s, v)) * 255.0
    return out


def test_photometric_matches_hsv_reference():
    rgb = np.random.default_rng(0).uniform(0, 255, (12, 9, 3)).astype(np.float32)
    rgb[0, 0] = [50, 50, 50]  # grey: no hue
    rgb[0, 1] = [200, 200, 10]  # ties between the largest channels
    planar = np.ascontiguousarray(rgb.transpose(2, 0, 1))  # [3, h, w]
    for deg in (-18.0, 7.5, 0.0, 359.0):
        np.testing.assert_allclose(PH._rotate_hue(planar, deg).transpose(1, 2, 0), _reference_hue(rgb, deg), atol=1e-3)
    sat = PH.photometric(planar, {"saturation": 0.6, "contrast_first": True}).transpose(1, 2, 0)
    ref = np.empty_like(rgb)
    for idx in np.ndindex(rgb.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*(rgb[idx] / 255.0))
        ref[idx] = np.array(colorsys.hsv_to_rgb(h, s * 0.6, v)) * 255.0
    np.testing.assert_allclose(sat, ref, atol=1e-3)
    d = {"brightness": 10.0, "contrast_first": False, "contrast": 1.5, "permutation": np.array([2, 0, 1])}
    np.testing.assert_allclose(PH.photometric(planar, d), ((planar + 10) * 1.5)[[2, 0, 1]], rtol=1e-6)
    np.testing.assert_array_equal(planar.transpose(1, 2, 0), rgb)  # the input is left alone


def test_bad_parameters():
    with pytest.raises(ValueError, match="scale must be an integer >= 32"):
        A.AugmentParams(scale=16)
    with pytest.raises(ValueError, match="needs an rng"):
        A.transform(np.zeros((40, 40, 3), np.uint8), [], np.zeros(0), np.zeros((0, 4)), A.AugmentParams(scale=32))


# --- back to the original frame (the inverse the tests check the recorded affine with) ---

def boxes_to_original(boxes: np.ndarray | torch.Tensor, affine) -> np.ndarray | torch.Tensor:
    """Boxes [N, 4] xyxy in input coordinates -> original image coordinates (undoes any flip)."""
    ax, bx, ay, by = (float(v) for v in affine)
    xa, xb = boxes[:, 0] * ax + bx, boxes[:, 2] * ax + bx
    ya, yb = boxes[:, 1] * ay + by, boxes[:, 3] * ay + by
    lib = torch if isinstance(boxes, torch.Tensor) else np
    return lib.stack([lib.minimum(xa, xb), lib.minimum(ya, yb), lib.maximum(xa, xb), lib.maximum(ya, yb)], 1)


def masks_to_original(masks: torch.Tensor, orig_size: tuple[int, int]) -> torch.Tensor:
    """Soft masks float [N, S, S] of an evaluation (resize-only) sample -> float [N, h, w], bilinear."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *orig_size))
    return F.interpolate(masks[:, None].float(), size=tuple(orig_size), mode="bilinear",
                         align_corners=False)[:, 0]  # [N, h, w]
