"""The anchors laid on an S×S input (analysis, benchmarks): the paper's grids at 550, and levels
of ceil(S / stride) cells at any S."""
import math

import numpy as np
import pytest
import torch

from pipeline.report.anchor_grids import input_anchors

STRIDES = (8, 16, 32, 64, 128)


def test_atss_grid_at_550():
    anchors, counts = input_anchors("atss", 550)
    assert counts == [69 * 69, 35 * 35, 18 * 18, 9 * 9, 5 * 5] and anchors.shape == (6416, 4)
    assert anchors.dtype == torch.float32
    np.testing.assert_array_equal(anchors[0], [-16, -16, 16, 16])  # 4·stride, centred at the corner (0, 0)
    np.testing.assert_array_equal(anchors[1], [-8, -16, 24, 16])  # level 0, row 0, column 1
    np.testing.assert_array_equal(anchors[69], [-16, -8, 16, 24])  # level 0, row 1, column 0
    np.testing.assert_array_equal(anchors[counts[0] + 1], [-16, -32, 48, 32])  # stride 16, side 64


def test_yolact_grid_at_550():
    anchors, counts = input_anchors("yolact", 550)
    assert sum(counts) == 19248 and anchors.shape == (19248, 4)
    w, h = anchors[:3, 2] - anchors[:3, 0], anchors[:3, 3] - anchors[:3, 1]
    torch.testing.assert_close(h / w, torch.tensor([0.5, 1.0, 2.0]))  # ratios h/w
    torch.testing.assert_close((w * h).sqrt(), torch.full((3,), 24.0))  # 3·8 at P3
    torch.testing.assert_close(anchors[1, :2] + anchors[1, 2:], torch.full((2,), 550 / 69))  # centre (0.5·s)


@pytest.mark.parametrize("scale", [64, 100, 130, 550])
def test_levels_have_ceil_scale_over_stride_cells(scale):
    _, counts = input_anchors("atss", scale)
    assert counts == [math.ceil(scale / s) ** 2 for s in STRIDES]
