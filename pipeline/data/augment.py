"""Training augmentation (docs/design.md §9, in the official mmdetection pipeline order) and the
evaluation resize, on numpy arrays, for one image and its instances.

Training: photometric distortion -> expand (p 0.5, ratio U(1, 4), mean fill) -> min-IoU random
crop (modes none / 0.1 / 0.3 / 0.5 / 0.7 / 0.9 / any, sides >= 0.3 of the canvas, aspect 0.5..2,
keeps instances whose box centre lies in the crop) -> resize to S×S without keeping the aspect
-> normalise -> horizontal flip (p 0.5). Evaluation: resize to S×S and normalise.

All geometric steps compose into one window of the original image (expand + crop = a window
that may reach past the image border, where the mean fill shows) followed by a scaling and
maybe a flip. So nothing is ever built at the expanded size: the image is resampled once from
the window (bilinear, half-pixel centres, like cv2/mmcv), photometric distortion is applied to
the original pixels that the window uses (it is per-pixel, so this equals distorting the whole
image first), and each mask is resampled once by nearest neighbour at pixel centres.

Recorded geometry (`Sample.affine`, `Sample.window`) maps network-input coordinates back:
    x_orig = ax · x + bx,  y_orig = ay · y + by      (ax < 0 after a flip)
and `window` = (x1, y1, x2, y2) is the crop window clipped to the image, in original pixels;
this is what `MaskIntegrals.with_transform(affine, window)` takes.

Boxes are recomputed as the tight pixel box of each augmented mask (so they always agree with
the masks, also after a crop cuts through a ring), then instances whose mask became empty or
whose box is under `min_box_size` px wide or high are dropped. Deviations from mmdetection, both
for the sake of an exact affine: masks resample at pixel centres (mmcv's nearest resize uses
the top-left corner), and boxes come from the masks instead of being transformed geometrically.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from pipeline.data.photometric import photometric

# RGB (the official configs give them for BGR input with to_rgb=True)
MEAN = np.array([123.68, 116.78, 103.94], dtype=np.float32)
STD = np.array([58.40, 57.12, 57.38], dtype=np.float32)
# MinIoURandomCrop draws a mode, then up to `crop_tries` crops; this bounds the number of modes
# so that an image whose boxes no crop can satisfy still terminates (then: no crop).
MAX_CROP_MODES = 100
NO_CROP, ANY_CROP = 1.0, 0.0  # mmdetection's mode sentinels among the min-IoU values
UNION_EPS = 1e-6  # floor of the patch-box union in the crop's IoU (mmdetection's bbox_overlaps eps)
MIN_SCALE = 32  # the coarsest ATSS level (stride 128) still needs a few pixels per cell at P3


@dataclass(frozen=True)
class AugmentParams:
    scale: int
    train: bool = True
    min_box_size: float = 4.0
    photometric: bool = True
    brightness_delta: float = 32.0
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: float = 18.0
    channel_swap: bool = True  # mmdetection v2's PhotoMetricDistortion permutes channels (p 0.5)
    expand_prob: float = 0.5
    expand_ratio: tuple[float, float] = (1.0, 4.0)
    crop: bool = True
    crop_min_ious: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    crop_min_size: float = 0.3
    crop_tries: int = 50
    flip_prob: float = 0.5

    def __post_init__(self):
        if not isinstance(self.scale, int) or self.scale < MIN_SCALE:
            raise ValueError(f"scale must be an integer >= {MIN_SCALE}, got {self.scale!r}")
        if self.min_box_size < 0:
            raise ValueError(f"min_box_size must be >= 0, got {self.min_box_size}")
        if not 1.0 <= self.expand_ratio[0] <= self.expand_ratio[1]:
            raise ValueError(f"expand_ratio must be (lo, hi) with 1 <= lo <= hi, got {self.expand_ratio}")
        if not 0.0 < self.crop_min_size <= 1.0:
            raise ValueError(f"crop_min_size must lie in (0, 1], got {self.crop_min_size}")


@dataclass
class Sample:
    """One transformed image. G = instances that survived, S = params.scale."""

    image: np.ndarray  # float32 [3, S, S], normalised RGB
    boxes: np.ndarray  # float32 [G, 4] xyxy in S×S input pixels (tight boxes of the masks)
    labels: np.ndarray  # int64 [G]
    masks: np.ndarray  # bool [G, S, S]
    keep: np.ndarray  # int64 [G] index of each instance in the input lists
    affine: np.ndarray  # float32 [4] (ax, bx, ay, by): input coords -> original coords
    window: np.ndarray  # int64 [4] (x1, y1, x2, y2) crop window clipped to the image, original px
    orig_size: tuple[int, int]  # (h, w)
    flipped: bool


def transform(image: np.ndarray, rles: list[dict], labels: np.ndarray, boxes: np.ndarray,
              params: AugmentParams, rng: np.random.Generator | None = None) -> Sample:
    """image uint8 [H, W, 3]; rles: G compressed RLEs; labels int64 [G]; boxes float [G, 4] xyxy.

    `params.train` selects the training pipeline (needs `rng`) or the evaluation resize.
    """
    h, w = image.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)  # [G, 4]
    photo, flip = None, False
    window = whole_image((h, w))  # x1, y1, x2, y2 (may exceed the image after expand/crop)
    inside = np.ones(len(boxes), dtype=bool)
    if params.train:
        if rng is None:
            raise ValueError("transform: the training pipeline needs an rng")
        photo = _photometric_draws(rng, params) if params.photometric else None
        left, top, cw, ch = _expand_draws(rng, w, h, params)
        shift = np.array([left, top, left, top], dtype=np.float32)
        if params.crop:
            patch, inside = _min_iou_crop(rng, cw, ch, boxes + shift, params)
        else:
            patch = np.array([0, 0, cw, ch], dtype=np.int64)
        window = patch - shift.astype(np.int64)
        flip = bool(rng.random() < params.flip_prob)
    s = params.scale
    keep = np.flatnonzero(inside)
    img = _resample_image(image, window, s, photo)  # [3, S, S] normalised
    masks, tight = _resample_masks([rles[i] for i in keep], (h, w), window, s)  # [K, S, S], [K, 4]
    if flip:
        img = img[:, :, ::-1]
        masks = masks[:, :, ::-1]
        tight = np.stack([s - tight[:, 2], tight[:, 1], s - tight[:, 0], tight[:, 3]], axis=1)  # [K, 4]
    size_ok = (tight[:, 2] - tight[:, 0] >= params.min_box_size) & (tight[:, 3] - tight[:, 1] >= params.min_box_size)
    ok = size_ok & (tight[:, 2] > tight[:, 0])  # an empty mask has a 0×0 box
    ww, wh = float(window[2] - window[0]), float(window[3] - window[1])
    ax, ay = ww / s, wh / s
    affine = np.array([-ax if flip else ax, window[0] + (ww if flip else 0.0), ay, window[1]], dtype=np.float32)
    clipped = np.array([max(window[0], 0), max(window[1], 0), min(window[2], w), min(window[3], h)], dtype=np.int64)
    return Sample(image=np.ascontiguousarray(img), boxes=tight[ok].astype(np.float32),
                  labels=np.asarray(labels, dtype=np.int64)[keep[ok]], masks=np.ascontiguousarray(masks[ok]),
                  keep=keep[ok].astype(np.int64), affine=affine, window=clipped, orig_size=(h, w), flipped=flip)


# --- random draws (in mmdetection's order) ------------------------------------------------

def _photometric_draws(rng: np.random.Generator, p: AugmentParams) -> dict:
    d = {}
    if rng.integers(2):
        d["brightness"] = rng.uniform(-p.brightness_delta, p.brightness_delta)
    d["contrast_first"] = bool(rng.integers(2))
    if d["contrast_first"] and rng.integers(2):
        d["contrast"] = rng.uniform(*p.contrast_range)
    if rng.integers(2):
        d["saturation"] = rng.uniform(*p.saturation_range)
    if rng.integers(2):
        d["hue"] = rng.uniform(-p.hue_delta, p.hue_delta)
    if not d["contrast_first"] and rng.integers(2):
        d["contrast"] = rng.uniform(*p.contrast_range)
    if p.channel_swap and rng.integers(2):
        d["permutation"] = rng.permutation(3)
    return d


def _expand_draws(rng: np.random.Generator, w: int, h: int, p: AugmentParams) -> tuple[int, int, int, int]:
    """(left, top, canvas_w, canvas_h) of the mean-filled canvas the image is placed on."""
    if rng.uniform(0, 1) > p.expand_prob:
        return 0, 0, w, h
    ratio = rng.uniform(*p.expand_ratio)
    left = int(rng.uniform(0, w * ratio - w))
    top = int(rng.uniform(0, h * ratio - h))
    return left, top, int(w * ratio), int(h * ratio)


def _min_iou_crop(rng: np.random.Generator, w: int, h: int, boxes: np.ndarray,
                  p: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """(patch int64 [4] xyxy in canvas coords, instances kept bool [G])."""
    keep_all = np.ones(len(boxes), dtype=bool)
    modes = (NO_CROP, *p.crop_min_ious, ANY_CROP)
    for _ in range(MAX_CROP_MODES):
        min_iou = modes[int(rng.integers(len(modes)))]
        if min_iou == NO_CROP:
            break
        # mmdetection tries up to `crop_tries` crops one by one; drawing them all at once and
        # taking the first that passes gives the same distribution
        n = p.crop_tries
        new_w = rng.uniform(p.crop_min_size * w, w, n)
        new_h = rng.uniform(p.crop_min_size * h, h, n)
        left = rng.uniform(0, 1, n) * (w - new_w)
        top = rng.uniform(0, 1, n) * (h - new_h)
        patches = np.stack([left, top, left + new_w, top + new_h], 1).astype(np.int64)  # [n, 4], truncated
        ok = (new_h / new_w >= 0.5) & (new_h / new_w <= 2)
        ok &= (patches[:, 2] > patches[:, 0]) & (patches[:, 3] > patches[:, 1])
        if len(boxes) == 0:
            hits = np.flatnonzero(ok)
            if hits.size:
                return patches[hits[0]], keep_all
            continue
        ok &= _patch_iou(patches, boxes).min(1) >= min_iou
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # [G, 2]
        inside = ((centre[None, :, 0] > patches[:, None, 0]) & (centre[None, :, 1] > patches[:, None, 1])
                  & (centre[None, :, 0] < patches[:, None, 2]) & (centre[None, :, 1] < patches[:, None, 3]))  # [n, G]
        ok &= inside.any(1)
        hits = np.flatnonzero(ok)
        if hits.size:
            return patches[hits[0]], inside[hits[0]]
    return np.array([0, 0, w, h], dtype=np.int64), keep_all


def _patch_iou(patches: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of each patch [n, 4] with each box [G, 4] -> [n, G]."""
    p, b = patches[:, None, :].astype(np.float64), boxes[None, :, :]  # [n, 1, 4], [1, G, 4]
    iw = np.clip(np.minimum(p[..., 2], b[..., 2]) - np.maximum(p[..., 0], b[..., 0]), 0, None)  # [n, G]
    ih = np.clip(np.minimum(p[..., 3], b[..., 3]) - np.maximum(p[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_p = (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1])  # [n, 1]
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # [1, G]
    return inter / np.maximum(area_p + area_b - inter, UNION_EPS)


# --- resampling ------------------------------------------------------------------------------

def _source_centres(lo: int, extent: int, s: int) -> np.ndarray:
    """Original coordinate of each output pixel centre along one axis, float64 [S]."""
    return lo + (np.arange(s, dtype=np.float64) + 0.5) * (extent / s)


def _resample_image(image: np.ndarray, window: np.ndarray, s: int, photo: dict | None) -> np.ndarray:
    """Bilinear resample of `window` to S×S, mean outside the image, normalised: float32 [3, S, S]."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in window)
    ix0, iy0, ix1, iy1 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if ix1 <= ix0 or iy1 <= iy0:  # the window shows only fill
        return np.zeros((3, s, s), dtype=np.float32)
    region = np.ascontiguousarray(image[iy0:iy1, ix0:ix1].transpose(2, 0, 1), dtype=np.float32)  # [3, h', w']
    if photo is not None:
        region = photometric(region, photo)
    # Zero padding of (pixel - mean) is the mean fill of Expand; dividing by std normalises.
    region -= MEAN[:, None, None]
    region /= STD[:, None, None]
    gx = (_source_centres(x1, x2 - x1, s) - ix0) * (2.0 / (ix1 - ix0)) - 1.0  # [S] in grid units
    gy = (_source_centres(y1, y2 - y1, s) - iy0) * (2.0 / (iy1 - iy0)) - 1.0
    grid = torch.empty((1, s, s, 2), dtype=torch.float32)
    grid[0, :, :, 0] = torch.from_numpy(gx.astype(np.float32))[None, :]  # [S, S] x varies along columns
    grid[0, :, :, 1] = torch.from_numpy(gy.astype(np.float32))[:, None]
    src = torch.from_numpy(region)[None]  # [1, 3, h', w']
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].numpy()  # [3, S, S]


def whole_image(size: tuple[int, int]) -> np.ndarray:
    """The window of the unaugmented route (evaluation, data.augment=false): the image itself."""
    return np.array([0, 0, size[1], size[0]], dtype=np.int64)  # x1, y1, x2, y2


def resize_masks(rles: list[dict], size: tuple[int, int], s: int) -> tuple[np.ndarray, np.ndarray]:
    """The masks of the unaugmented route, as `transform(..., train=False)` makes them (before it
    drops empty and small ones): bool [K, S, S] and their tight boxes int64 [K, 4] xyxy."""
    return _resample_masks(rles, size, whole_image(size), s)


def _resample_masks(rles: list[dict], size: tuple[int, int], window: np.ndarray,
                    s: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest resample of each mask's part inside `window` to S×S.

    Returns masks bool [K, S, S] and their tight boxes int64 [K, 4] xyxy (0s for an empty mask).
    Only the output block that can hold an instance's pixels is computed.
    """
    k = len(rles)
    masks = np.zeros((k, s, s), dtype=bool)
    tight = np.zeros((k, 4), dtype=np.int64)
    if k == 0:
        return masks, tight
    h, w = size
    x1, y1, x2, y2 = (int(v) for v in window)
    src_x = np.floor(_source_centres(x1, x2 - x1, s)).astype(np.int64)  # [S] nondecreasing
    src_y = np.floor(_source_centres(y1, y2 - y1, s)).astype(np.int64)
    decoded = mask_utils.decode(rles)  # uint8 [H, W, K], Fortran order
    bbox = mask_utils.toBbox(rles)  # [K, 4] xywh of each mask's pixels
    for i in range(k):
        bx0, by0 = int(bbox[i, 0]), int(bbox[i, 1])
        bx1, by1 = bx0 + int(bbox[i, 2]), by0 + int(bbox[i, 3])
        c0, c1 = np.searchsorted(src_x, [bx0, bx1])
        r0, r1 = np.searchsorted(src_y, [by0, by1])
        if c1 <= c0 or r1 <= r0:
            continue
        block = decoded[:, :, i][np.ix_(src_y[r0:r1], src_x[c0:c1])].astype(bool)  # [r1-r0, c1-c0]
        rows, cols = np.flatnonzero(block.any(1)), np.flatnonzero(block.any(0))
        if rows.size == 0:
            continue
        masks[i, r0:r1, c0:c1] = block
        tight[i] = (c0 + cols[0], r0 + rows[0], c0 + cols[-1] + 1, r0 + rows[-1] + 1)
    return masks, tight
