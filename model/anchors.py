"""Anchor grids over P3–P7 (docs/design.md §7), computed from the feature-map sizes at any input size S.

Grids (named; `ANCHOR_GRIDS` is the registry):
- "yolact" (fixed-IoU baseline, mmdet YOLACT): 3 per location, ratios h/w ∈ (0.5, 1, 2), size
  3·base with base = 8, 16, 32, 64, 128 (24…384 px; w = size/√r, h = size·√r), centred at
  (i + 0.5)·stride. *(paper preset, `yolact_550_strides=True`)*: the strides are 550/[69,35,18,9,5]
  at every S, as the official configs; otherwise stride = S / feature size per level.
- "atss": 1 square per location of side 4·stride, strides 8…128, centred at the cell corner
  (i·stride, j·stride) *(paper preset: mmdet's centre offset 0)*.
- "mayolact": the ATSS grid with 2 scales per location, sides 4 and 4√2 times the stride.
`scales_per_level` > 1 adds octave scales 2^(j/n), j = 0..n-1, to "yolact" and "atss" (YOLACT++: 3).

Values: bit for bit those of mmdetection v2's `AnchorGenerator` (`mmdet/core/anchor/anchor_generator.py`,
the one the official maIoU code runs), i.e. float32 arithmetic in its order: scales
`octave_base_scale · 2^(j/n)` in float64 cast to float32; `w = base · (1/√r) · scale`,
`h = base · √r · scale` in float32; base anchors `centre ∓ 0.5·w` (the centre a Python float, 0 for
"atss", `550·0.5/n` as the mmdet YOLACT config's explicit `centers` for "yolact"); shifts
`arange(n) · stride` in float32; anchor = base anchor + shift. The exact values rounded once
differ from these by a few float32 ulp (of a 550-px coordinate) on some anchors of the "yolact"
and "mayolact" grids, which moves forced best matches on exact IoU ties.

Order (the contract with `model.heads.flatten_anchor_outputs`): level, then row, then column,
then anchor-within-location; within a location ratio-major, then scale (mmdet's `scale_major`).
Counts at 550: 6,416 locations -> 19,248 ("yolact"), 6,416 ("atss"), 12,832 ("mayolact").

Output: anchors [A, 4] xyxy absolute input pixels, num_anchors_per_level list[int] (5 entries).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

BASE_SIZES = (8, 16, 32, 64, 128)  # P3..P7 nominal strides, also the anchor base sizes
YOLACT_550_FEATURE_SIZES = (69, 35, 18, 9, 5)  # P3..P7 at 550: the paper preset's strides are 550/these


@dataclass(frozen=True)
class AnchorGrid:
    octave_base_scale: float  # anchor side = octave_base_scale · base size (× octave scale)
    ratios: tuple[float, ...]  # h / w
    center_offset: float  # centre = (i + offset) · stride
    scales_per_octave: int  # the grid's own number of scales per level


ANCHOR_GRIDS = {
    "yolact": AnchorGrid(3.0, (0.5, 1.0, 2.0), 0.5, 1),
    "atss": AnchorGrid(4.0, (1.0,), 0.0, 1),
    "mayolact": AnchorGrid(4.0, (1.0,), 0.0, 2),
}


def _grid(name: str) -> AnchorGrid:
    if name not in ANCHOR_GRIDS:
        raise ValueError(f"unknown anchor grid {name!r}; valid: {sorted(ANCHOR_GRIDS)}")
    return ANCHOR_GRIDS[name]


def num_scales(grid: str, scales_per_level: int = 1) -> int:
    """Scales per location: the grid's own (maYOLACT: 2) or `scales_per_level` (YOLACT++: 3)."""
    g = _grid(grid)
    if scales_per_level < 1:
        raise ValueError(f"scales_per_level must be >= 1, got {scales_per_level}")
    if g.scales_per_octave > 1 and scales_per_level not in (1, g.scales_per_octave):
        raise ValueError(f"anchor grid {grid!r} fixes {g.scales_per_octave} scales per level; "
                         f"scales_per_level={scales_per_level} contradicts it")
    return max(g.scales_per_octave, scales_per_level)


def anchors_per_location(grid: str, scales_per_level: int = 1) -> int:
    return len(_grid(grid).ratios) * num_scales(grid, scales_per_level)


def _scales(grid: str, scales_per_level: int) -> torch.Tensor:
    """The octave scales, float64 products cast to float32 as mmdet's `torch.Tensor(np.array)`: [n]."""
    g, n = _grid(grid), num_scales(grid, scales_per_level)
    return torch.tensor([2 ** (j / n) * g.octave_base_scale for j in range(n)], dtype=torch.float64).float()


def base_anchor_shapes(grid: str, level: int, scales_per_level: int = 1, device=None) -> torch.Tensor:
    """float32 (w, h) of the anchors at one location of `level` (0 = P3), ratio-major then scale: [n, 2]."""
    scales = _scales(grid, scales_per_level).to(device)  # [n]
    h_ratios = torch.tensor(_grid(grid).ratios, dtype=torch.float32, device=device).sqrt()  # [R]
    w_ratios = 1 / h_ratios  # [R]
    base = BASE_SIZES[level]  # a Python int, as mmdet's base_sizes
    ws = (base * w_ratios[:, None] * scales[None, :]).reshape(-1)  # [R*n], mmdet's op order
    hs = (base * h_ratios[:, None] * scales[None, :]).reshape(-1)  # [R*n]
    return torch.stack((ws, hs), dim=1)


def level_strides(grid: str, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int],
                  yolact_550_strides: bool = True) -> list[tuple[float, float]]:
    """(stride_y, stride_x) per level, Python floats (mmdet's config values)."""
    if grid != "yolact":
        return [(float(b), float(b)) for b in BASE_SIZES[:len(feature_sizes)]]
    if yolact_550_strides:
        return [(550.0 / n, 550.0 / n) for n in YOLACT_550_FEATURE_SIZES[:len(feature_sizes)]]
    return [(image_size[0] / h, image_size[1] / w) for h, w in feature_sizes]


def _centres(grid: str, strides: list[tuple[float, float]], yolact_550_strides: bool) -> list[tuple[float, float]]:
    """(cy, cx) of the base anchor per level, Python floats: mmdet's `center_offset · base size`
    (0 here), or the YOLACT config's explicit `centers` (550 · 0.5 / n, i.e. half a stride)."""
    offset = _grid(grid).center_offset
    if grid == "yolact" and yolact_550_strides:
        return [(550 * offset / n, 550 * offset / n) for n in YOLACT_550_FEATURE_SIZES[:len(strides)]]
    return [(offset * sy, offset * sx) for sy, sx in strides]


def make_anchors(grid: str, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int],
                 scales_per_level: int = 1, yolact_550_strides: bool = True,
                 dtype=torch.float32, device=None) -> tuple[torch.Tensor, list[int]]:
    """Anchors [A, 4] (xyxy, input pixels; mmdet's float32 values, then cast to `dtype`) and the
    count per level, for features of the given sizes."""
    if len(feature_sizes) > len(BASE_SIZES):
        raise ValueError(f"at most {len(BASE_SIZES)} levels (P3–P7), got {len(feature_sizes)}")
    strides = level_strides(grid, feature_sizes, image_size, yolact_550_strides)
    centres = _centres(grid, strides, yolact_550_strides)
    out, counts = [], []
    for level, ((h, w), (sy, sx), (cy, cx)) in enumerate(zip(feature_sizes, strides, centres)):
        shapes = base_anchor_shapes(grid, level, scales_per_level, device)  # [n, 2] float32
        ws, hs = shapes[:, 0], shapes[:, 1]
        base = torch.stack((cx - 0.5 * ws, cy - 0.5 * hs, cx + 0.5 * ws, cy + 0.5 * hs), dim=-1)  # [n, 4]
        shift_x = (torch.arange(w, device=device) * sx).float()  # [w]: int64 · Python float -> float32
        shift_y = (torch.arange(h, device=device) * sy).float()  # [h]
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")  # [h, w] each, row-major
        shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)  # [h*w, 1, 4]
        out.append((base[None, :, :] + shifts).reshape(-1, 4))  # [h*w*n, 4]
        counts.append(h * w * shapes.shape[0])
    anchors = torch.cat(out, dim=0) if out else torch.zeros(0, 4, device=device)
    return anchors.to(dtype), counts


def count_anchors(grid: str, feature_sizes: list[tuple[int, int]], scales_per_level: int = 1) -> int:
    """Total anchors for these feature sizes without building them."""
    return sum(h * w for h, w in feature_sizes) * anchors_per_location(grid, scales_per_level)


def pyramid_sizes(image_size: int, levels: int = 5) -> list[tuple[int, int]]:
    """P3..P7 sizes our ResNet + FPN produce for an S×S input (each stride-2 conv: ⌊(n−1)/2⌋+1)."""
    n = image_size
    for _ in range(2):  # stem: 7×7/2 conv, 3×3/2 max-pool -> C2
        n = (n - 1) // 2 + 1
    sizes = []
    for _ in range(levels):
        n = (n - 1) // 2 + 1
        sizes.append((n, n))
    return sizes
