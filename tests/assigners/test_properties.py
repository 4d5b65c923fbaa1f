"""Properties of the overlaps (docs/design.md §5), on integer-aligned boxes with masks inside their box."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from assigners import MaskIntegrals, integral_image
from assigners.overlaps import box_diou, box_giou, box_iou, mask_aware_iou, mask_box_iou

# The official MOB guard |B| + 1e-6 is not absorbed by float32 for boxes under 32 px², so maIoU
# is scaled by up to (1 + 1e-6 / |B|) there (1 px² boxes: 1e-6), as in the official code; allow
# exactly that plus a few float32 ulps of rounding.
ULPS = 1e-6 + 4 * torch.finfo(torch.float32).eps


@st.composite
def scenes(draw, size=24, max_g=3, max_a=12, half=False):
    """Integer GT boxes inside a size×size image with masks inside them; anchors integer (or
    half-integer with `half`) and inside the image."""
    g = draw(st.integers(1, max_g))
    a = draw(st.integers(1, max_a))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)

    def boxes(n, step):
        lo = torch.randint(0, size * step - step, (n, 2), generator=gen)
        ext = torch.randint(1, size * step, (n, 2), generator=gen)
        hi = torch.minimum(lo + ext, torch.tensor(size * step))
        return (torch.cat([lo, hi], 1) / step).float()  # [N, 4]

    gt = boxes(g, 1)
    anchors = boxes(a, 2 if half else 1)
    density = draw(st.floats(0.05, 1.0))
    masks = torch.zeros((g, size, size), dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(gt.long().tolist()):
        masks[i, y1:y2, x1:x2] = torch.rand(y2 - y1, x2 - x1, generator=gen) < density
    return gt, masks, anchors


@settings(max_examples=60, deadline=None)
@given(scenes())
def test_gmaiou_le_maiou_le_one(scene):
    gt, masks, anchors = scene
    integral = MaskIntegrals.from_masks(masks)
    ma = mask_aware_iou(gt, anchors, integral)
    gma = mask_box_iou(gt, anchors, integral)
    assert (gma >= 0).all()
    assert (gma <= ma * (1 + ULPS)).all()
    assert (ma <= 1 + ULPS).all()


@settings(max_examples=40, deadline=None)
@given(scenes())
def test_maiou_equals_iou_when_mask_fills_box(scene):
    gt, _, anchors = scene
    masks = torch.zeros((gt.shape[0], 24, 24), dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(gt.long().tolist()):
        masks[i, y1:y2, x1:x2] = True
    ma = mask_aware_iou(gt, anchors, integral_image(masks))
    torch.testing.assert_close(ma, box_iou(gt, anchors), rtol=ULPS, atol=0)
    # and GmaIoU with P = M is then the IoU too (the mask is the box)
    torch.testing.assert_close(mask_box_iou(gt, anchors, integral_image(masks)), box_iou(gt, anchors),
                               rtol=ULPS, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(scenes(half=True), st.integers(-4, 4), st.integers(-4, 4))
def test_even_shift_changes_no_overlap(scene, sx, sy):
    """Moving everything by an even number of pixels (inside the image) changes nothing, also for
    half-pixel anchors: round-half-to-even commutes with even shifts."""
    gt, masks, anchors = scene
    dx, dy = 2 * sx, 2 * sy
    big = 24 + 16
    canvas = torch.zeros((gt.shape[0], big, big), dtype=torch.bool)
    canvas[:, 8:32, 8:32] = masks
    moved = torch.zeros_like(canvas)
    moved[:, 8 + dy:32 + dy, 8 + dx:32 + dx] = masks
    offset = torch.tensor([8.0, 8.0, 8.0, 8.0])
    shift = torch.tensor([dx, dy, dx, dy], dtype=torch.float32)
    for fn in (mask_aware_iou, mask_box_iou):
        before = fn(gt + offset, anchors + offset, MaskIntegrals.from_masks(canvas))
        after = fn(gt + offset + shift, anchors + offset + shift, MaskIntegrals.from_masks(moved))
        assert torch.equal(before, after)
    for fn in (box_iou, box_giou, box_diou):
        assert torch.equal(fn(gt + offset, anchors + offset), fn(gt + offset + shift, anchors + offset + shift))


def test_odd_shift_can_change_a_half_pixel_count():
    """Why the shift must be even: the anchor [0.5, 1.5] rounds half to even to the pixels [0, 2),
    shifted by 1 to [2, 2) (empty), shifted by 2 to [2, 4)."""
    anchor = torch.tensor([[0.5, 0.5, 1.5, 1.5]])
    counts = []
    for shift in (0, 1, 2):
        masks = torch.zeros((1, 8, 8), dtype=torch.bool)
        masks[0, shift:shift + 2, shift:shift + 2] = True  # a 2×2 block moved with the anchor
        counts.append(MaskIntegrals.from_masks(masks).count(anchor + shift).item())
    assert counts == [4, 0, 4]


@pytest.mark.parametrize("seed", range(2))
def test_properties_hold_on_device(seed, device):
    gen = torch.Generator().manual_seed(seed)
    gt = torch.tensor([[2.0, 3, 15, 11], [5, 5, 6, 6]])
    masks = torch.zeros((2, 16, 16), dtype=torch.bool)
    masks[0, 3:11, 2:15] = torch.rand(8, 13, generator=gen) < 0.5
    masks[1, 5, 5] = True
    anchors = torch.randint(0, 16, (30, 2), generator=gen).float()
    anchors = torch.cat([anchors, anchors + torch.randint(1, 9, (30, 2), generator=gen)], 1)  # [30, 4]
    integral = MaskIntegrals.from_masks(masks.to(device))
    ma = mask_aware_iou(gt.to(device), anchors.to(device), integral).cpu()
    gma = mask_box_iou(gt.to(device), anchors.to(device), integral).cpu()
    assert (gma >= 0).all() and (gma <= ma * (1 + ULPS)).all() and (ma <= 1 + ULPS).all()
