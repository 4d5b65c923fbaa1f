"""Anchor grids: counts, hand-computed values, order against a brute-force loop, mmdetection's
float32 values bit for bit, alignment with the head."""
import math

import numpy as np
import pytest
import torch

from model.anchors import (ANCHOR_GRIDS, anchors_per_location, count_anchors, make_anchors, pyramid_sizes)
from model.heads import PredictionHead, flatten_anchor_outputs


@pytest.mark.parametrize("size,expected", [
    (550, {"yolact": 19248, "atss": 6416, "mayolact": 12832}),
    (400, {"yolact": 10077, "atss": 3359, "mayolact": 6718}),
    (700, {"yolact": 30963, "atss": 10321, "mayolact": 20642}),
])
def test_counts_at_paper_scales(size, expected):
    sizes = pyramid_sizes(size)
    for grid, n in expected.items():
        anchors, counts = make_anchors(grid, sizes, (size, size))
        assert anchors.shape == (n, 4) and sum(counts) == n == count_anchors(grid, sizes)


def test_pyramid_sizes_at_550():
    assert pyramid_sizes(550) == [(69, 69), (35, 35), (18, 18), (9, 9), (5, 5)]


def test_yolact_plus_plus_nine_per_location():
    anchors, _ = make_anchors("yolact", pyramid_sizes(550), (550, 550), scales_per_level=3)
    assert anchors.shape[0] == 57744 and anchors_per_location("yolact", 3) == 9


def test_first_anchors_by_hand():
    a, _ = make_anchors("yolact", pyramid_sizes(550), (550, 550))
    c = 0.5 * 550 / 69  # centre of cell (0, 0) at stride 550/69
    w, h = 24 / math.sqrt(0.5), 24 * math.sqrt(0.5)  # ratio h/w = 0.5 first
    torch.testing.assert_close(a[0], torch.tensor([c - w / 2, c - h / 2, c + w / 2, c + h / 2]))
    torch.testing.assert_close(a[1], torch.tensor([c - 12, c - 12, c + 12, c + 12]))
    # last P7 anchor (ratio 2) at cell (4, 4), stride 110, size 384
    c7, w7, h7 = 4.5 * 110, 384 / math.sqrt(2), 384 * math.sqrt(2)
    torch.testing.assert_close(a[-1], torch.tensor([c7 - w7 / 2, c7 - h7 / 2, c7 + w7 / 2, c7 + h7 / 2]))
    b, _ = make_anchors("atss", pyramid_sizes(550), (550, 550))
    torch.testing.assert_close(b[0], torch.tensor([-16.0, -16, 16, 16]))
    torch.testing.assert_close(b[1], torch.tensor([-8.0, -16, 24, 16]))  # next column
    torch.testing.assert_close(b[69], torch.tensor([-16.0, -8, 16, 24]))  # next row
    m, _ = make_anchors("mayolact", pyramid_sizes(550), (550, 550))
    r = 16 * math.sqrt(2)
    torch.testing.assert_close(m[1], torch.tensor([-r, -r, r, r]))


def _brute_force(grid, sizes, image, scales_per_level, preset):
    g = ANCHOR_GRIDS[grid]
    n = max(g.scales_per_octave, scales_per_level)
    rows = []
    for level, (h, w) in enumerate(sizes):
        base = 8 * 2 ** level
        if grid == "yolact":
            s = 550 / (69, 35, 18, 9, 5)[level] if preset else image / h
        else:
            s = base
        for i in range(h):
            for j in range(w):
                for r in g.ratios:
                    for k in range(n):
                        side = g.octave_base_scale * base * 2 ** (k / n)
                        aw, ah = side / math.sqrt(r), side * math.sqrt(r)
                        cx, cy = (j + g.center_offset) * s, (i + g.center_offset) * s
                        rows.append([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2])
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("grid,spl,preset", [("yolact", 1, True), ("yolact", 1, False), ("yolact", 3, True),
                                             ("atss", 1, True), ("atss", 3, True), ("mayolact", 1, True)])
def test_order_matches_brute_force(grid, spl, preset):
    sizes = pyramid_sizes(100)  # 13, 7, 4, 2, 1: odd sizes, non-integer S/size
    anchors, counts = make_anchors(grid, sizes, (100, 100), spl, preset)
    torch.testing.assert_close(anchors, _brute_force(grid, sizes, 100, spl, preset).float())
    assert counts == [h * w * anchors_per_location(grid, spl) for h, w in sizes]


def _mmdet_float32(grid, sizes, image, scales_per_level, preset):
    """mmdetection v2 `AnchorGenerator` (gen_single_level_base_anchors + single_level_grid_priors),
    its float32 operations written out one by one in numpy, in its order."""
    g = ANCHOR_GRIDS[grid]
    n = max(g.scales_per_octave, scales_per_level)
    scales = (np.array([2 ** (j / n) for j in range(n)]) * g.octave_base_scale).astype(np.float32)
    h_ratios = np.sqrt(np.array(g.ratios, dtype=np.float32))
    w_ratios = np.float32(1) / h_ratios
    half = np.float32(0.5)
    levels = []
    for level, (h, w) in enumerate(sizes):
        base = np.float32(8 * 2 ** level)
        ws = (base * w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (base * h_ratios[:, None] * scales[None, :]).reshape(-1)
        if grid == "yolact" and preset:  # the config's strides and explicit centers
            n_cells = (69, 35, 18, 9, 5)[level]
            stride, centre = 550.0 / n_cells, 550 * 0.5 / n_cells
        else:
            stride = image / h if grid == "yolact" else 8.0 * 2 ** level
            centre = g.center_offset * stride
        c = np.float32(centre)
        base_anchors = np.stack([c - half * ws, c - half * hs, c + half * ws, c + half * hs], axis=-1)
        sx = np.arange(w).astype(np.float32) * np.float32(stride)
        sy = np.arange(h).astype(np.float32) * np.float32(stride)
        xx, yy = np.tile(sx, h), np.repeat(sy, w)  # mmdet's _meshgrid, row-major
        shifts = np.stack([xx, yy, xx, yy], axis=-1)
        levels.append((base_anchors[None, :, :] + shifts[:, None, :]).reshape(-1, 4))
    return torch.from_numpy(np.concatenate(levels))


@pytest.mark.parametrize("grid,spl,preset,size", [("yolact", 1, True, 550), ("yolact", 3, True, 550),
                                                  ("atss", 1, True, 550), ("atss", 3, True, 400),
                                                  ("mayolact", 1, True, 550), ("mayolact", 1, True, 700),
                                                  ("yolact", 1, False, 100)])
def test_bit_for_bit_mmdetection(grid, spl, preset, size):
    sizes = pyramid_sizes(size)
    anchors, _ = make_anchors(grid, sizes, (size, size), spl, preset)
    assert torch.equal(anchors, _mmdet_float32(grid, sizes, size, spl, preset))


@pytest.mark.parametrize("grid", ["yolact", "mayolact"])
def test_the_float64_values_rounded_once_differ(grid):
    """Why the order matters: the exact values rounded once differ from mmdet's on some anchors of
    these grids, by float32 rounding of the operands (a few ulp of a 550-px coordinate)."""
    sizes = pyramid_sizes(550)
    anchors, _ = make_anchors(grid, sizes, (550, 550))
    exact = _brute_force(grid, sizes, 550, 1, True)
    assert (anchors != exact.float()).any()
    ulp_at_1024 = 1024 * torch.finfo(torch.float32).eps
    assert (anchors.double() - exact).abs().max() <= 2 * ulp_at_1024


def test_dtype_device_and_bad_names():
    a, _ = make_anchors("atss", [(2, 2)], (16, 16), dtype=torch.float64)
    assert a.dtype == torch.float64
    with pytest.raises(ValueError, match="unknown anchor grid"):
        make_anchors("retina", [(2, 2)], (16, 16))
    with pytest.raises(ValueError, match="fixes 2 scales"):
        anchors_per_location("mayolact", 3)


def test_flatten_matches_location_major_order():
    B, n, K, H, W = 2, 3, 5, 4, 6
    x = torch.randn(B, n * K, H, W)
    flat = flatten_anchor_outputs(x, K)
    for i in range(H):
        for j in range(W):
            for a in range(n):
                torch.testing.assert_close(flat[:, (i * W + j) * n + a], x[:, a * K:(a + 1) * K, i, j])


@pytest.mark.parametrize("grid,spl", [("yolact", 1), ("atss", 1), ("mayolact", 1), ("yolact", 3)])
def test_head_outputs_align_with_anchors(grid, spl):
    """Wire the real head so its box output at each anchor reads (row, col, level, anchor-within-location)
    from the feature map, then check those against each anchor's own geometry."""
    n = anchors_per_location(grid, spl)
    head = PredictionHead(3, n, num_classes=2, num_protos=4)
    with torch.no_grad():
        for conv in (head.shared, head.conv_box):
            conv.weight.zero_()
            conv.bias.zero_()
        for c in range(3):
            head.shared.weight[c, c, 1, 1] = 1.0  # identity on (level, row, col) channels
        for a in range(n):
            head.conv_box.weight[a * 4 + 0, 1, 1, 1] = 1.0  # row
            head.conv_box.weight[a * 4 + 1, 2, 1, 1] = 1.0  # col
            head.conv_box.weight[a * 4 + 2, 0, 1, 1] = 1.0  # level
            head.conv_box.bias[a * 4 + 3] = float(a)
    sizes = pyramid_sizes(200)
    feats = []
    for level, (h, w) in enumerate(sizes):
        rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
        cols = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
        feats.append(torch.stack((torch.full((h, w), float(level)), rows, cols))[None])
    _, box, _ = head(feats)
    anchors, counts = make_anchors(grid, sizes, (200, 200), spl, yolact_550_strides=False)
    assert box.shape[1] == anchors.shape[0]
    level = torch.repeat_interleave(torch.arange(5), torch.tensor(counts))
    offset = ANCHOR_GRIDS[grid].center_offset
    stride = torch.tensor([200 / h if grid == "yolact" else 8 * 2 ** l for l, (h, _) in enumerate(sizes)])[level]
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2
    torch.testing.assert_close(box[0, :, 2], level.float())
    torch.testing.assert_close(box[0, :, 0], centre[:, 1] / stride - offset)
    torch.testing.assert_close(box[0, :, 1], centre[:, 0] / stride - offset)
    # anchor-within-location: the same (ratio, scale) shape as the location's a-th base anchor
    a = box[0, :, 3].round().long()
    first = torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(counts).cumsum(0)[:-1]])[level]
    wh = anchors[:, 2:] - anchors[:, :2]
    torch.testing.assert_close(wh, wh[first + a])
