"""The overlaps against brute force, by hand, and their properties (docs/design.md §5)."""
import pytest
import torch

from assigners import MaskIntegrals, integral_image
from assigners.overlaps import box_diou, box_giou, box_iou, mask_aware_iou, mask_box_iou, mob_ratio
from tests.assigners.reference import (brute_box_terms, brute_counts, brute_gmaiou, brute_maiou,
                                       random_case)

FORMS = ["full", "compact"]


def _integral(masks, form):
    return integral_image(masks) if form == "full" else MaskIntegrals.from_masks(masks)


def _check_against_brute(gt, masks, anchors, device, form):
    gt, masks, anchors = gt.to(device), masks.to(device), anchors.to(device)
    integral = _integral(masks, form)
    ma = mask_aware_iou(gt, anchors, integral).cpu()
    gma = mask_box_iou(gt, anchors, integral).cpu()
    assert not torch.isnan(ma).any() and not torch.isnan(gma).any()
    torch.testing.assert_close(ma, brute_maiou(gt, masks, anchors), rtol=0, atol=0)
    torch.testing.assert_close(gma, brute_gmaiou(gt, masks, anchors), rtol=0, atol=0)
    # the per-GT form ([G, K, 4]) gives the same values as the dense one
    per_gt = anchors[None].expand(gt.shape[0], -1, -1).contiguous()  # [G, A, 4]
    torch.testing.assert_close(mask_aware_iou(gt, per_gt, integral).cpu(), ma, rtol=0, atol=0)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("seed", range(6))
def test_random_cases_equal_brute_force(seed, form, device):
    gen = torch.Generator().manual_seed(seed)
    h, w = int(torch.randint(6, 30, (1,), generator=gen)), int(torch.randint(6, 30, (1,), generator=gen))
    gt, masks, anchors = random_case(gen, h, w, g=4, a=40, integer=seed % 2 == 0, spill=seed % 3 == 0)
    _check_against_brute(gt, masks, anchors, device, form)


def test_counts_equal_brute_force(device):
    gen = torch.Generator().manual_seed(7)
    gt, masks, anchors = random_case(gen, 23, 17, g=5, a=60, spill=True)
    expect = brute_counts(masks, anchors)
    for integral in (MaskIntegrals.from_masks(masks.to(device)), MaskIntegrals.from_full(integral_image(masks.to(device)))):
        assert torch.equal(integral.count(anchors.to(device)).cpu(), expect)


def _masks_from_boxes(h, w, boxes):
    """bool [G, H, W] with the pixels of integer boxes set."""
    out = torch.zeros((len(boxes), h, w), dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        out[i, y1:y2, x1:x2] = True
    return out


EDGE_CASES = {
    # name: (H, W, gt boxes, mask boxes (pixels set), anchors)
    "border_and_corners": (12, 10, [[0, 0, 10, 12], [0, 0, 3, 3], [7, 9, 10, 12]],
                           [[0, 0, 10, 12], [0, 0, 3, 3], [7, 9, 10, 12]],
                           [[-2, -2, 2, 2], [8, 10, 12, 14], [0, 0, 10, 12], [9.5, 11.5, 10.5, 12.5],
                            [-0.5, -0.5, 0.5, 0.5], [6.5, 8.5, 10.5, 12.5]]),
    "one_pixel": (8, 8, [[3, 4, 4, 5]], [[3, 4, 4, 5]],
                  [[3, 4, 4, 5], [2.5, 3.5, 4.5, 5.5], [3.5, 4.5, 4.5, 5.5], [3.4, 4.4, 3.6, 4.6], [0, 0, 8, 8]]),
    "anchors_partly_outside": (10, 10, [[2, 2, 9, 9]], [[3, 3, 9, 9]],
                               [[-20, -20, 5, 5], [5, 5, 30, 30], [-5, 2, 15, 8], [2, -7.5, 8, 20.5]]),
    "empty_mask": (9, 9, [[1, 1, 6, 6], [2, 2, 8, 8]], [[0, 0, 0, 0], [3, 3, 6, 6]],
                   [[1, 1, 6, 6], [0, 0, 9, 9], [2.5, 2.5, 7.5, 7.5]]),
    "identical_gts": (10, 10, [[1, 1, 7, 7], [1, 1, 7, 7]], [[2, 2, 6, 6], [2, 2, 6, 6]],
                      [[0, 0, 4, 4], [1, 1, 7, 7], [3.5, 3.5, 8.5, 8.5]]),
    "thin_objects": (16, 16, [[0, 7, 16, 8], [5, 0, 6, 16]], [[0, 7, 16, 8], [5, 0, 6, 16]],
                     [[0, 6.5, 16, 8.5], [4.5, 0, 6.5, 16], [0, 0, 16, 16], [5, 7, 6, 8], [4, 4, 12, 12]]),
    "mask_outside_box": (12, 12, [[3, 3, 6, 6]], [[1, 1, 11, 11]],
                         [[0, 0, 3, 3], [3, 3, 6, 6], [5, 5, 12, 12], [0, 0, 12, 12]]),
    "no_gt": (8, 8, [], [], [[0, 0, 4, 4], [2.5, 2.5, 9, 9]]),
    "tied_centres": (16, 16, [[4, 4, 12, 12], [0, 0, 8, 8]], [[5, 4, 12, 11], [0, 0, 8, 8]],
                     # anchors centred at equal distances from the GT centres
                     [[0, 0, 8, 8], [8, 0, 16, 8], [0, 8, 8, 16], [8, 8, 16, 16], [4, -4, 12, 4]]),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_cases_equal_brute_force(name, form, device):
    h, w, gt, mask_boxes, anchors = EDGE_CASES[name]
    masks = _masks_from_boxes(h, w, mask_boxes)
    gt = torch.tensor(gt, dtype=torch.float32).reshape(-1, 4)  # [G, 4], also for G = 0
    _check_against_brute(gt, masks, torch.tensor(anchors, dtype=torch.float32), device, form)


def test_no_gt_and_no_anchor(device):
    gt0 = torch.zeros((0, 4), device=device)
    anchors = torch.tensor([[0.0, 0, 4, 4]], device=device)
    masks0 = torch.zeros((0, 8, 8), dtype=torch.bool, device=device)
    for integral in (integral_image(masks0), MaskIntegrals.from_masks(masks0)):
        for fn in (mask_aware_iou, mask_box_iou):
            assert fn(gt0, anchors, integral).shape == (0, 1)
        assert mob_ratio(gt0, integral).shape == (0,)
    gt = torch.tensor([[0.0, 0, 4, 4]], device=device)
    masks = torch.ones((1, 8, 8), dtype=torch.bool, device=device)
    for fn in (box_iou, box_giou, box_diou):
        assert fn(gt, anchors[:0]).shape == (1, 0)
    assert mask_aware_iou(gt, anchors[:0], MaskIntegrals.from_masks(masks)).shape == (1, 0)


def test_hand_computed_mask_overlaps(device):
    # 4×4 image, GT box [0,0,4,4], mask = the top-left 2×2 block: |M| = 4, |B| = 16, MOB = 0.25.
    masks = torch.zeros((1, 4, 4), dtype=torch.bool)
    masks[0, :2, :2] = True
    gt = torch.tensor([[0.0, 0, 4, 4]], device=device)
    anchors = torch.tensor([
        [0, 0, 2, 2],          # IoU 4/16; holds all 4 px: maIoU 4/0.25/16 = 1;  GmaIoU 4/(4+4-4) = 1
        [2, 2, 4, 4],          # IoU 4/16; no mask px: 0, 0
        [0, 0, 4, 4],          # IoU 1;    4 px: maIoU 1;  GmaIoU 4/(16+4-4) = 0.25
        [1, 1, 3, 3],          # IoU 4/16; 1 px: maIoU 1/0.25/16 = 0.25; GmaIoU 1/(4+4-1) = 1/7
        [0.5, 0.5, 2.5, 2.5],  # rounds half to even to [0,0,2,2]: 4 px, union 16: 1;  4/(4+4-4) = 1
        [1.5, 1.5, 3.5, 3.5],  # rounds to [2,2,4,4]: 0 px: 0, 0
        [4, 0, 8, 4],          # touches the box only on an edge: IoU 0 -> exactly 0, 0
    ], device=device)
    integral = MaskIntegrals.from_masks(masks.to(device))
    torch.testing.assert_close(mask_aware_iou(gt, anchors, integral).cpu(),
                               torch.tensor([[1, 0, 1, 0.25, 1, 0, 0]]))
    torch.testing.assert_close(mask_box_iou(gt, anchors, integral).cpu(),
                               torch.tensor([[1, 0, 0.25, 1 / 7, 1, 0, 0]]))
    torch.testing.assert_close(mob_ratio(gt, integral).cpu(), torch.tensor([0.25]))


def test_hand_computed_box_overlaps(device):
    gt = torch.tensor([[0.0, 0, 4, 4]], device=device)
    anchors = torch.tensor([[2.0, 0, 6, 4], [4, 4, 8, 8], [0, 0, 4, 4]], device=device)
    # [2,0,6,4]: inter 8, union 24 -> IoU 1/3; enclosing [0,0,6,4] = 24 -> GIoU 1/3;
    #            centres (2,2)-(4,2): rho² 4, diag² 36+16 = 52 -> DIoU 1/3 - 1/13
    # [4,4,8,8]: IoU 0; enclosing 64, union 32 -> GIoU -0.5; rho² 32, diag² 128 -> DIoU -0.25
    torch.testing.assert_close(box_iou(gt, anchors).cpu(), torch.tensor([[1 / 3, 0, 1]]))
    torch.testing.assert_close(box_giou(gt, anchors).cpu(), torch.tensor([[1 / 3, -0.5, 1]]))
    torch.testing.assert_close(box_diou(gt, anchors).cpu(), torch.tensor([[1 / 3 - 1 / 13, -0.25, 1]]))


@pytest.mark.parametrize("seed", range(3))
def test_box_overlaps_equal_pairwise(seed, device):
    gen = torch.Generator().manual_seed(seed)
    gt, _, anchors = random_case(gen, 20, 20, g=5, a=30)
    inter, union, _, _ = brute_box_terms(gt, anchors)
    torch.testing.assert_close(box_iou(gt.to(device), anchors.to(device)).cpu(), inter / union, rtol=0, atol=0)
    # GIoU and DIoU from their definitions, in float64
    g64, a64 = gt.double(), anchors.double()
    lt = torch.minimum(g64[:, None, :2], a64[None, :, :2])
    rb = torch.maximum(g64[:, None, 2:], a64[None, :, 2:])
    enc = (rb - lt).prod(-1)
    iou = (inter / union).double()
    torch.testing.assert_close(box_giou(gt.to(device), anchors.to(device)).cpu().double(),
                               iou - (enc - union.double()) / enc, rtol=1e-5, atol=1e-6)
    rho2 = (((g64[:, None, :2] + g64[:, None, 2:]) - (a64[None, :, :2] + a64[None, :, 2:])) / 2).pow(2).sum(-1)
    diag2 = (rb - lt).pow(2).sum(-1)
    torch.testing.assert_close(box_diou(gt.to(device), anchors.to(device)).cpu().double(),
                               iou - rho2 / diag2, rtol=1e-5, atol=1e-6)


def test_empty_mask_gives_zero_never_nan(device):
    gt = torch.tensor([[1.0, 1, 5, 5], [0, 0, 6, 6]], device=device)
    masks = torch.zeros((2, 8, 8), dtype=torch.bool, device=device)
    masks[1, 1:3, 1:3] = True
    anchors = torch.tensor([[1.0, 1, 5, 5], [0, 0, 8, 8]], device=device)
    for integral in (integral_image(masks), MaskIntegrals.from_masks(masks)):
        for fn in (mask_aware_iou, mask_box_iou):
            out = fn(gt, anchors, integral)
            assert torch.isfinite(out).all()
            assert (out[0] == 0).all() and (out[1] > 0).all()
        assert mob_ratio(gt, integral)[0] == 0


def test_wrong_inputs_raise_value_error():
    gt = torch.tensor([[0.0, 0, 4, 4]])
    masks = torch.ones((1, 8, 8), dtype=torch.bool)
    with pytest.raises(ValueError, match="anchors"):
        box_iou(gt, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="gt_boxes"):
        box_iou(torch.zeros(4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="floating"):
        box_iou(gt.long(), torch.zeros(3, 4).long())
    with pytest.raises(ValueError, match="integral"):
        mask_aware_iou(gt, torch.zeros(3, 4), integral_image(masks).float())
    with pytest.raises(ValueError, match="instances"):
        mask_aware_iou(gt, torch.zeros(3, 4), MaskIntegrals.from_masks(masks.repeat(2, 1, 1)))
    with pytest.raises(ValueError, match="per-GT"):
        mask_aware_iou(gt, torch.zeros(2, 3, 4), MaskIntegrals.from_masks(masks))


@pytest.mark.parametrize("seed", range(6))
def test_brute_force_assigner_overlap_equals_reference_and_integral_path(seed):
    from assigners.brute import brute_mask_aware_iou

    gen = torch.Generator().manual_seed(seed)
    gt, masks, anchors = random_case(gen, 23, 31, g=3, a=50, integer=seed % 2 == 0, spill=seed % 3 == 0)
    brute = brute_mask_aware_iou(gt, masks, anchors)
    torch.testing.assert_close(brute, brute_maiou(gt, masks, anchors), rtol=0, atol=0)
    assert torch.equal(brute, mask_aware_iou(gt, anchors, integral_image(masks)))
