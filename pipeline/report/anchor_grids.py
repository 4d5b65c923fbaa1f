"""The anchors the model lays on an S×S input, for code that needs them without a model:
dataset analysis (`pipeline.report.analysis`) and the benchmarks (`jobs.bench_assign`, `jobs.bench_data`).

`input_anchors(grid, scale)` -> (anchors float32 [A, 4] xyxy input pixels, count per level), from
`model.make_anchors` on the P3–P7 sizes our backbone + FPN produce (`model.pyramid_sizes`:
ceil(S / stride) cells per level, 69, 35, 18, 9, 5 at 550), so the grids here are the trained
ones by construction. Grids (docs/design.md §7): "atss" (1 square of 4·stride per cell, centred at the
cell corner; 6,416 at 550), "yolact" (3 ratios, 550-based strides; 19,248 at 550), "mayolact".
"""
from __future__ import annotations

from torch import Tensor

from model import make_anchors, pyramid_sizes


def input_anchors(grid: str, scale: int) -> tuple[Tensor, list[int]]:
    return make_anchors(grid, pyramid_sizes(scale), (scale, scale))
