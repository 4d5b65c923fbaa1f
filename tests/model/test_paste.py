"""Pasting masks inside their windows against the full-image bilinear resize it replaces."""
import sys

import pytest
import torch
import torch.nn.functional as F

from model import Yolact, postprocess
from model.masks import CROP_PADDING, crop_region
from model.paste import crop_bounds, paste_masks
from pipeline.config import EvalConfig

# Pixels whose bilinear value lies within float rounding of the threshold may differ (the two
# routes sum the same four terms, possibly with and without FMA); the issue allows 0.01 %.
MAX_DIFFERING = 1e-4


def _reference(soft, size, thr=0.5):
    return F.interpolate(soft[:, None], size=size, mode="bilinear", align_corners=False)[:, 0] > thr


def _random_crops(g, N, Hp, Wp, spread=10.0, max_size=None):
    """Boxes in proto pixels, some partly or wholly outside the map, some empty."""
    xy = torch.rand(N, 2, generator=g) * torch.tensor([Wp + 2 * spread, Hp + 2 * spread]) - spread
    wh = torch.rand(N, 2, generator=g) * (max_size or max(Hp, Wp))
    wh[::7] = 0  # zero-size boxes still get the 1-pixel padding
    return torch.cat((xy, xy + wh), 1)


@pytest.mark.parametrize("size", [(480, 640), (427, 640), (96, 70), (33, 20), (701, 503)])
def test_paste_equals_the_full_image_resize(size):
    g = torch.Generator().manual_seed(size[0])
    N, Hp, Wp = 60, 40, 36
    boxes = _random_crops(g, N, Hp, Wp)
    # values near the threshold on purpose: a smooth ramp around 0.5 plus noise
    soft = (0.5 + 0.3 * torch.randn(N, Hp, Wp, generator=g)).clamp(0, 1) * crop_region(boxes, Hp, Wp)
    got = paste_masks(soft, crop_bounds(boxes, Hp, Wp, CROP_PADDING), size, 0.5, chunk=7)
    ref = _reference(soft, size)
    assert got.shape == ref.shape and got.dtype == torch.bool
    assert (got != ref).float().mean().item() <= MAX_DIFFERING
    assert ref.any()  # the comparison is not between two empty stacks


def test_crop_bounds_are_the_crop_regions_extent():
    g = torch.Generator().manual_seed(1)
    Hp, Wp = 20, 17
    boxes = _random_crops(g, 200, Hp, Wp, spread=5.0)
    boxes[0] = torch.tensor([3.0, 4.0, 3.0, 4.0])  # integral corners: the half-open edge matters
    boxes[1] = torch.tensor([10.0, 2.5, 4.0, 9.5])  # x1 > x2: crop_region takes min/max
    region = crop_region(boxes, Hp, Wp)  # [N, Hp, Wp]
    b = crop_bounds(boxes, Hp, Wp, CROP_PADDING)
    rows = torch.arange(Hp)[None, :, None]
    cols = torch.arange(Wp)[None, None, :]
    box = ((cols >= b[:, 0, None, None]) & (cols < b[:, 2, None, None])
           & (rows >= b[:, 1, None, None]) & (rows < b[:, 3, None, None]))
    assert torch.equal(box, region)


def test_paste_of_nothing_and_of_empty_regions():
    assert paste_masks(torch.zeros(0, 8, 8), torch.zeros(0, 4, dtype=torch.long), (30, 40), 0.5).shape == (0, 30, 40)
    soft = torch.ones(2, 8, 8)
    bounds = torch.tensor([[3, 3, 3, 6], [8, 0, 8, 8]])  # zero width; wholly past the right edge
    out = paste_masks(soft * 0, bounds, (30, 40), 0.5)
    assert out.shape == (2, 30, 40) and not out.any()
    with pytest.raises(ValueError, match="threshold"):
        paste_masks(soft, bounds, (30, 40), -0.1)


def test_postprocess_masks_equal_the_full_resize_route(monkeypatch):
    """End to end on a real (random) network: the same detections, and masks equal to those of
    the full-image resize the paste replaced (swapped in as the reference route)."""
    torch.manual_seed(0)
    net = Yolact(3, "resnet18", fpn_channels=16, num_protos=4, anchor_grid="atss").eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64))
    out["cls"] = 3 * torch.randn(out["cls"].shape, generator=torch.Generator().manual_seed(0))
    sizes = [(120, 90), (47, 200)]
    fast = postprocess(out, sizes, EvalConfig(max_per_img=50))
    monkeypatch.setattr(sys.modules["model.postprocess"], "paste_masks",
                        lambda soft, bounds, size, thr: _reference(soft, size, thr))
    slow = postprocess(out, sizes, EvalConfig(max_per_img=50))
    for f, s in zip(fast, slow):
        assert f["masks"].shape[0] == 50 and s["masks"].any()
        assert torch.equal(f["boxes"], s["boxes"]) and torch.equal(f["labels"], s["labels"])
        assert (f["masks"] != s["masks"]).float().mean().item() <= MAX_DIFFERING
