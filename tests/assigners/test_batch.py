"""The batch form of every assigner equals its per-image calls bit for bit (`assigners.batch`)."""
import pytest
import torch

from assigners import ASSIGNERS, MaskIntegrals, integral_image
from assigners.batch import concat_integrals
from tests.assigners.reference import random_case

H = W = 48
LEVELS = [300, 120, 40]  # anchors per level: candidates come from every level


def _batch(seed: int, gts: list[int]):
    """Images with the given GT counts (0 = no GT) over one shared anchor grid."""
    gen = torch.Generator().manual_seed(seed)
    anchors = random_case(gen, H, W, g=1, a=sum(LEVELS))[2]
    boxes, masks = [], []
    for g in gts:
        gt, m, _ = random_case(gen, H, W, g=g, a=1, spill=True)
        if g > 3:
            gt[2], m[2] = gt[0], m[0]  # identical GTs: ties between GTs of one image
            m[1] = False  # an empty mask: no positive for the mask-aware assigners
        boxes.append(gt)
        masks.append(m)
    return boxes, masks, anchors


def _transformed(masks: torch.Tensor, flip: bool) -> MaskIntegrals:
    """The Parquet form: integrals of a 2×-downscaled frame, queried in input pixels, windowed."""
    small = masks[:, ::2, ::2].contiguous()  # [G, H/2, W/2]
    affine = torch.tensor([-0.5, W / 2, 0.5, 0.0] if flip else [0.5, 0.0, 0.5, 0.0])
    window = torch.tensor([1, 2, W // 2 - 3, H // 2])
    return MaskIntegrals.from_masks(small).with_transform(affine, window)


INTEGRAL_FORMS = {
    "masks": lambda m, b: None,
    "compact": lambda m, b: MaskIntegrals.from_masks(m),
    "full": lambda m, b: integral_image(m),
    "transformed": lambda m, b: _transformed(m, flip=b % 2 == 1),
}


@pytest.mark.parametrize("form", list(INTEGRAL_FORMS))
@pytest.mark.parametrize("gts", [[0, 0], [3, 0, 40, 1], [7, 7, 0, 12, 2, 5, 30, 4]])
@pytest.mark.parametrize("name", list(ASSIGNERS))
def test_batch_equals_per_image(name, gts, form):
    if name == "atss_maiou_brute" and form != "masks":
        pytest.skip("brute force counts the masks given, not the integrals (and is slow)")
    boxes, masks, anchors = _batch(len(gts) * 7 + sum(gts), gts)
    integrals = [INTEGRAL_FORMS[form](m, b) for b, m in enumerate(masks)]
    expect = torch.stack([ASSIGNERS[name](gt, m, anchors, LEVELS, i)
                          for gt, m, i in zip(boxes, masks, integrals)])  # [B, A]
    out = ASSIGNERS[name].batch(boxes, masks, anchors, LEVELS, integrals)
    assert out.dtype == torch.int64 and out.shape == (len(gts), sum(LEVELS))
    assert torch.equal(out, expect)
    if sum(gts):
        assert (out >= 0).any()  # the case has positives to compare
    if name == "atss_maiou_brute":  # the slow baseline assigns as the integral images do
        assert torch.equal(out, ASSIGNERS["atss_maiou"].batch(boxes, masks, anchors, LEVELS))


def test_concatenated_integrals_count_as_their_parts():
    boxes, masks, anchors = _batch(5, [4, 0, 9])
    parts = [_transformed(m, flip=b == 2) for b, m in enumerate(masks)]
    joined = concat_integrals(parts)
    queries = anchors[:20].expand(len(joined), -1, -1)  # [G, K, 4]
    expect = torch.cat([p.count_as(anchors[:20].expand(len(p), -1, -1), torch.float64) for p in parts])
    assert torch.equal(joined.count_as(queries, torch.float64), expect)
    assert torch.equal(joined.areas(), torch.cat([p.areas() for p in parts]))
    with pytest.raises(ValueError, match="frame transform"):
        concat_integrals([parts[0], MaskIntegrals.from_masks(masks[0])])


def test_batch_inputs_are_checked_per_image():
    boxes, masks, anchors = _batch(3, [2, 2])
    with pytest.raises(ValueError, match="one entry per image"):
        ASSIGNERS["atss_maiou"].batch(boxes, masks[:1], anchors, LEVELS)
    with pytest.raises(ValueError, match="gt_boxes"):
        ASSIGNERS["atss_iou"].batch([boxes[0], boxes[1][:, :3]], masks, anchors, LEVELS)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", [n for n in ASSIGNERS if n != "atss_maiou_brute"])  # brute: host loop by design
def test_batch_assignment_never_syncs_on_cuda(name):
    boxes, masks, anchors = _batch(11, [3, 0, 40, 1])
    expect = ASSIGNERS[name].batch(boxes, masks, anchors, LEVELS)
    dev = torch.device("cuda")
    integrals = [MaskIntegrals.from_masks(m).to(dev) for m in masks]  # built off the step, as the loader does
    boxes, masks, anchors = [b.to(dev) for b in boxes], [m.to(dev) for m in masks], anchors.to(dev)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = ASSIGNERS[name].batch(boxes, masks, anchors, LEVELS, integrals)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.equal(out.cpu(), expect)
