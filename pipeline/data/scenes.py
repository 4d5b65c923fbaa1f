"""Synthetic scenes: shapes whose masks fill their boxes to very different degrees.

Scenes (`render_scene`): a textured background (smooth noise + a grating + pixel noise), a few
unannotated distractors (triangles, scribbles), then 2..8 objects painted in order, each later
object occluding the earlier ones; what is annotated is every object's *visible* mask. A
placement that would hide more than half of an earlier object is redrawn, so every object
keeps at least half of its pixels. Object sizes are log-uniform, which gives small, medium and
large objects in COCO's sense at the default 256-pixel images.

Categories are shape families (`CATEGORIES`), so the label is the shape, never the colour:
- solid: ellipses, rectangles, hexagons; mask-over-box (MOB) ratio mostly 0.7..1;
- ring:  annuli and crescents; MOB 0.15..0.65;
- cross: L-shapes and plus-shapes at any rotation; MOB 0.2..0.65;
- bar:   thin rotated bars; MOB from ~0.05 (diagonal) to ~1 (axis-aligned).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = ("solid", "ring", "cross", "bar")
MIN_OBJECTS, MAX_OBJECTS = 2, 8
MAX_OCCLUDED = 0.5  # an object keeps at least this complement of its pixels visible
MIN_VISIBLE_PIXELS = 12
MIN_THICKNESS_PX = 1.5  # thin parts (ring walls, bar widths) stay at least this thick
AXIS_JITTER = 0.15  # radians of rotation for the axis-aligned solids
PLACEMENT_TRIES = 20


# --- shapes: predicates over local coordinates (u, v) in units of the object radius ---------

def _shape(family: str, rng: np.random.Generator, r: float):
    """(predicate(u, v) -> bool, axis_aligned) for one random member of `family` at radius r px.

    axis_aligned: the shape is turned by a multiple of 90° plus a small jitter, not at random
    (solid rectangles stay solid-looking, with MOB near 1).
    """
    thin = MIN_THICKNESS_PX / r  # the thinnest part allowed, in local units
    if family == "solid":
        kind = rng.integers(4)
        if kind == 0:
            b = rng.uniform(0.55, 1.0)
            return (lambda u, v: u * u + (v / b) ** 2 <= 1.0), False
        if kind == 1:
            b = rng.uniform(0.5, 1.0)
            return (lambda u, v: (np.abs(u) <= 1.0) & (np.abs(v) <= b)), True
        if kind == 2:
            b = rng.uniform(0.6, 1.0)
            return (lambda u, v: u**4 + (v / b) ** 4 <= 1.0), True  # rounded rectangle
        angles = np.arange(6) * math.pi / 3
        return (lambda u, v: np.max([u * math.cos(a) + v * math.sin(a) for a in angles], axis=0)
                <= math.sqrt(3) / 2), False
    if family == "ring":
        if rng.random() < 0.6:
            k = min(rng.uniform(0.55, 0.9), 1.0 - thin)
            b = rng.uniform(0.7, 1.0)
            return (lambda u, v: (lambda d: (d <= 1.0) & (d > k * k))(u * u + (v / b) ** 2)), False
        d, rho = rng.uniform(0.3, 0.7), rng.uniform(0.8, 1.05)
        return (lambda u, v: (u * u + v * v <= 1.0) & ((u - d) ** 2 + v * v > rho * rho)), False
    if family == "cross":
        t = max(rng.uniform(0.12, 0.4), thin)
        inside = lambda u, v: (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)  # noqa: E731
        if rng.random() < 0.5:
            return (lambda u, v: inside(u, v) & ((u <= -1.0 + 2 * t) | (v >= 1.0 - 2 * t))), False
        return (lambda u, v: inside(u, v) & ((np.abs(u) <= t) | (np.abs(v) <= t))), False
    w = max(rng.uniform(0.05, 0.22), thin / 2)
    return (lambda u, v: (np.abs(u) <= 1.0) & (np.abs(v) <= w)), False


@dataclass
class _Object:
    label: int
    full: np.ndarray  # bool [H, W] the whole object (inside the image)
    visible: np.ndarray  # bool [H, W] what later objects leave visible
    area: int  # pixels of `full`


def _place(rng: np.random.Generator, size: int, label: int, r: float) -> np.ndarray:
    """bool [size, size] mask of one random member of CATEGORIES[label] at radius r."""
    pred, axis_aligned = _shape(CATEGORIES[label], rng, r)
    cx, cy = rng.uniform(0, size, 2)
    if axis_aligned:
        theta = rng.integers(4) * math.pi / 2 + rng.uniform(-AXIS_JITTER, AXIS_JITTER)
    else:
        theta = rng.uniform(0, 2 * math.pi)
    reach = r * math.sqrt(2)  # the local square [-1, 1]^2 under any rotation
    x0, x1 = max(int(cx - reach), 0), min(int(math.ceil(cx + reach)) + 1, size)
    y0, y1 = max(int(cy - reach), 0), min(int(math.ceil(cy + reach)) + 1, size)
    mask = np.zeros((size, size), dtype=bool)
    if x1 <= x0 or y1 <= y0:
        return mask
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / r  # [w] pixel centres
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy) / r  # [h]
    c, s = math.cos(theta), math.sin(theta)
    u = c * dx[None, :] + s * dy[:, None]  # [h, w]
    v = -s * dx[None, :] + c * dy[:, None]
    mask[y0:y1, x0:x1] = pred(u, v)
    return mask


def _layout(rng: np.random.Generator, size: int) -> list[_Object]:
    r_lo, r_hi = max(6.0, 0.03 * size), 0.5 * size
    n = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    # larger objects first, so that small ones on top rarely hide more than half of them
    radii = np.sort(np.exp(rng.uniform(math.log(r_lo), math.log(r_hi), n)))[::-1]
    objects: list[_Object] = []
    for r0 in radii:
        label = int(rng.integers(len(CATEGORIES)))
        for attempt in range(PLACEMENT_TRIES):
            # a redraw keeps the size class: shrink slowly instead of resampling from scratch
            r = float(max(r0 * 0.95**attempt, r_lo))
            new = _place(rng, size, label, r)
            area = int(new.sum())
            if area < MIN_VISIBLE_PIXELS:
                continue
            # every earlier object must keep at least (1 - MAX_OCCLUDED) of its pixels visible
            if all((o.visible & ~new).sum() >= (1 - MAX_OCCLUDED) * o.area for o in objects):
                for o in objects:
                    o.visible &= ~new
                objects.append(_Object(label, new, new.copy(), area))
                break
    return [o for o in objects if o.visible.sum() >= MIN_VISIBLE_PIXELS]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """float32 [size, size, 3]: two colours blended by smooth noise, a grating, pixel noise."""
    cells = int(rng.integers(3, 12))
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    t = np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.float32)[..., None] / 255  # [S, S, 1]
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    img = c0 + (c1 - c0) * t  # [S, S, 3]
    # a grating sin(a·x + b·y) = sin(a·x)cos(b·y) + cos(a·x)sin(b·y): two outer products
    angle, period = rng.uniform(0, math.pi), rng.uniform(6, 40)
    ramp = np.arange(size, dtype=np.float32) * (2 * math.pi / period)
    ax, by = ramp * math.cos(angle), ramp * math.sin(angle)
    grating = np.outer(np.cos(by), np.sin(ax)) + np.outer(np.sin(by), np.cos(ax))  # [S, S]
    img += (rng.uniform(0, 25) * grating)[..., None]
    img += rng.standard_normal((size, size, 1), dtype=np.float32) * 6
    return img


def _distractors(rng: np.random.Generator, image: Image.Image, size: int) -> None:
    """Unannotated clutter: filled triangles and scribbled polylines."""
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(0, size, 2)
        r = rng.uniform(4, 0.12 * size)
        pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in rng.uniform(0, 2 * math.pi, 3)]
        draw.polygon(pts, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    for _ in range(int(rng.integers(0, 4))):
        pts = [tuple(p) for p in np.cumsum(rng.normal(0, 0.06 * size, (int(rng.integers(3, 8)), 2)), 0)
               + rng.uniform(0, size, 2)]
        draw.line(pts, fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=int(rng.integers(1, 4)))


def _paint(rng: np.random.Generator, img: np.ndarray, obj: _Object) -> None:
    """Paint the object's full mask: a random colour, a linear shade, texture noise, maybe stripes."""
    ys, xs = np.nonzero(obj.full)
    colour = rng.uniform(0, 255, 3).astype(np.float32)
    shade = rng.normal(0, 0.4, 2)
    span = max(xs.max() - xs.min(), ys.max() - ys.min(), 1)
    value = colour + (((xs - xs.mean()) * shade[0] + (ys - ys.mean()) * shade[1]) / span * 40)[:, None]
    if rng.random() < 0.3:
        period = rng.uniform(3, 12)
        value += (20 * np.sign(np.sin((xs + ys) * math.pi / period)))[:, None]
    value += rng.normal(0, 8, (len(xs), 1))
    img[ys, xs] = value


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """RGB uint8 [size, size, 3], visible masks (bool [size, size] each), labels (0..3)."""
    objects = _layout(rng, size)
    base = Image.fromarray(np.clip(_background(rng, size), 0, 255).astype(np.uint8))
    _distractors(rng, base, size)
    img = np.asarray(base, dtype=np.float32).copy()
    for o in objects:
        _paint(rng, img, o)
    return np.clip(img, 0, 255).astype(np.uint8), [o.visible for o in objects], [o.label for o in objects]
