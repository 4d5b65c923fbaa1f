"""Every assigner on hand-computed cases, the registry contract and input validation."""
import pytest
import torch

from assigners import ASSIGNERS, BACKGROUND, IGNORE, MaskIntegrals, UnknownAssignerError, integral_image
from assigners.atss import atss_candidates

BG, IG = BACKGROUND, IGNORE
NAMES = ["fixed_iou", "atss_iou", "atss_giou", "atss_diou", "atss_maiou", "atss_gmaiou", "atss_maiou_brute"]


def _t(x, device, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype, device=device)


def test_registry_names_and_sentinels():
    assert list(ASSIGNERS) == NAMES
    assert BACKGROUND < 0 and IGNORE < 0 and BACKGROUND != IGNORE
    with pytest.raises(UnknownAssignerError, match="atss_maiou") as err:
        ASSIGNERS["atss_mIoU"]
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    assert "atss_mIoU" in str(err.value) and all(n in str(err.value) for n in NAMES)
    with pytest.raises(TypeError):
        ASSIGNERS["x"] = None  # read-only


def test_fixed_iou_hand_computed(device):
    anchors = _t([[0, 0, 10, 10],    # a0: IoU 1 with g0
                  [0, 0, 10, 5],     # a1: IoU 50/100 = 0.5 with g0 -> positive (>=)
                  [0, 0, 10, 4.5],   # a2: IoU 0.45 with g0 -> ignored
                  [20, 20, 30, 30],  # a3: IoU 25/100 = 0.25 with g2 -> background, then forced to g2
                  [50, 50, 60, 60],  # a4: IoU 0.8 with g1 and g4 (identical); both force it: g4 wins
                  [50, 50, 60, 59],  # a5: IoU 72/98 with g1 and g4 -> tie, lowest GT: g1
                  [70, 70, 80, 80]], device)  # a6: IoU 0 with every GT -> background
    gt = _t([[0, 0, 10, 10],        # g0
             [50, 50, 58, 60],      # g1
             [20, 20, 25, 25],      # g2
             [200, 200, 210, 210],  # g3: IoU 0 with every anchor: forces anchor 0 (min_pos_iou = 0)
             [50, 50, 58, 60]], device)  # g4 = g1
    out = ASSIGNERS["fixed_iou"](gt, None, anchors, [7])
    assert out.tolist() == [3, 0, IG, 2, 4, 1, BG]
    assert out.dtype == torch.int64 and out.device == anchors.device


def test_fixed_iou_no_gt_and_no_anchor(device):
    anchors = _t([[0, 0, 4, 4], [2, 2, 6, 6]], device)
    out = ASSIGNERS["fixed_iou"](torch.zeros((0, 4), device=device), None, anchors, [2])
    assert out.tolist() == [BG, BG]
    out = ASSIGNERS["fixed_iou"](_t([[0, 0, 4, 4]], device), None, anchors[:0], [0])
    assert out.shape == (0,) and out.dtype == torch.int64


def _atss_case(device):
    # 8×8 image, one GT [0,0,8,8] whose mask is its left half (cols 0..3): |M| = 32, MOB = 0.5.
    # One level of 6 anchors, so all 6 are candidates.
    gt = _t([[0, 0, 8, 8]], device)
    masks = torch.zeros((1, 8, 8), dtype=torch.bool, device=device)
    masks[0, :, :4] = True
    anchors = _t([[0, 0, 4, 8],     # a0: left half
                  [4, 0, 8, 8],     # a1: right half
                  [0, 0, 8, 8],     # a2: the box
                  [2, 2, 6, 6],     # a3: centre square
                  [4, 4, 12, 12],   # a4: partly outside the image
                  [-4, 0, 4, 8]], device)  # a5: partly outside the image
    return gt, masks, anchors


# Per overlap: the six candidate overlaps, mean + unbiased std, and the positives (every candidate
# centre is strictly inside the GT box except a4's (8, 8) and a5's (0, 4)).
ATSS_HAND = {
    # IoU: .5 .5 1 .25 16/112 32/96; mean .4544, std .3018 -> thr .7561: a2 only
    "atss_iou": [BG, BG, 0, BG, BG, BG],
    # GIoU: .5 .5 1 .25 (1/7 - 32/144) 1/3; mean .4173, std .3564 -> thr .7737: a2 only
    "atss_giou": [BG, BG, 0, BG, BG, BG],
    # DIoU: (.5 - 4/128) (.5 - 4/128) 1 .25 (1/7 - 32/288) (1/3 - 16/208); thr .7434: a2 only
    "atss_diou": [BG, BG, 0, BG, BG, BG],
    # maIoU = count/MOB/union: 32/.5/64 = 1, 0, 1, 8/.5/64 = .25, 0, 32/.5/96 = 2/3;
    # mean .4861, std .4667 -> thr .9528: a0 and a2
    "atss_maiou": [0, BG, 0, BG, BG, BG],
    # GmaIoU = count/(|A|+|M|-count): 1, 0, 32/64 = .5, 8/40 = .2, 0, 32/64 = .5;
    # mean .3667, std .3830 -> thr .7496: a0 only
    "atss_gmaiou": [0, BG, BG, BG, BG, BG],
}


@pytest.mark.parametrize("form", ["masks", "full", "compact"])
@pytest.mark.parametrize("name", list(ATSS_HAND))
def test_atss_hand_computed(name, form, device):
    gt, masks, anchors = _atss_case(device)
    integral = {"masks": None, "full": integral_image(masks), "compact": MaskIntegrals.from_masks(masks)}[form]
    gt_masks = masks if form == "masks" else None
    out = ASSIGNERS[name](gt, gt_masks, anchors, [6], integral=integral)
    assert out.tolist() == ATSS_HAND[name]


def test_atss_identical_gts_lowest_index_wins(device):
    gt, masks, anchors = _atss_case(device)
    out = ASSIGNERS["atss_maiou"](gt.repeat(2, 1), masks.repeat(2, 1, 1), anchors, [6])
    assert out.tolist() == [0, BG, 0, BG, BG, BG]


def test_atss_empty_mask_gets_no_positive(device):
    gt, masks, anchors = _atss_case(device)
    gt2 = torch.cat([gt, gt])  # [2, 4]
    masks2 = torch.cat([torch.zeros_like(masks), masks])  # GT 0 has an empty mask
    for name in ("atss_maiou", "atss_gmaiou"):
        out = ASSIGNERS[name](gt2, masks2, anchors, [6])
        assert out.tolist() == [1 if v == 0 else v for v in ATSS_HAND[name]]
    # the box-only ATSS ignores masks, so the first GT takes the tie
    assert ASSIGNERS["atss_iou"](gt2, masks2, anchors, [6]).tolist() == ATSS_HAND["atss_iou"]


def test_atss_candidates_break_distance_ties_by_lowest_index(device):
    # GT centre (0, 0); 12 unit anchors on the x axis at distances 1..10 except that
    # indices 3, 7 and 10 all sit at distance 9 (the 9th and 10th nearest): the lowest index, 3,
    # is the 9th candidate. A second level has 2 anchors, both candidates (fewer than 9).
    dist = [1, 2, 3, 9, 4, 5, 6, 9, 7, 8, 9, 10]
    anchors = torch.tensor([[d - 0.5, -0.5, d + 0.5, 0.5] for d in dist] + [[0, 0, 1, 1], [-1, -1, 0, 0]],
                           device=device)
    gt = _t([[-1, -1, 1, 1]], device)
    cand = atss_candidates(gt, anchors, [12, 2])
    assert cand.tolist() == [[0, 1, 2, 4, 5, 6, 8, 9, 3, 12, 13]]


def test_atss_single_candidate_gives_no_positive(device):
    # One level with one anchor: std of one overlap is undefined (official: NaN -> no positive).
    out = ASSIGNERS["atss_iou"](_t([[0, 0, 8, 8]], device), None, _t([[0, 0, 8, 8]], device), [1])
    assert out.tolist() == [BG]


@pytest.mark.parametrize("name", NAMES)
def test_no_gt_no_anchor(name, device):
    anchors = _t([[0, 0, 4, 4], [2, 2, 6, 6], [1, 1, 3, 3]], device)
    empty_masks = torch.zeros((0, 8, 8), dtype=torch.bool, device=device)
    out = ASSIGNERS[name](torch.zeros((0, 4), device=device), empty_masks, anchors, [2, 1])
    assert out.tolist() == [BG, BG, BG]
    masks = torch.ones((1, 8, 8), dtype=torch.bool, device=device)
    out = ASSIGNERS[name](_t([[0, 0, 4, 4]], device), masks, anchors[:0], [0, 0])
    assert out.shape == (0,) and out.dtype == torch.int64


def test_mask_free_assigners_accept_no_masks():
    gt, _, anchors = _atss_case("cpu")
    for name in ("fixed_iou", "atss_iou", "atss_giou", "atss_diou"):
        ASSIGNERS[name](gt, None, anchors, [6])
    for name in ("atss_maiou", "atss_gmaiou"):
        with pytest.raises(ValueError, match="gt_masks"):
            ASSIGNERS[name](gt, None, anchors, [6])


@pytest.mark.parametrize("name", NAMES)
def test_wrong_inputs_raise_value_error_naming_the_argument(name):
    gt, masks, anchors = _atss_case("cpu")
    bad = {
        "gt_boxes": dict(gt_boxes=gt[:, :3]),
        "anchors": dict(anchors=anchors[None]),
        "gt_masks": dict(gt_masks=masks.float()),
        "num_anchors_per_level": dict(num_anchors_per_level=[5]),
        "integral": dict(integral=integral_image(masks.repeat(2, 1, 1))),
    }
    for arg, change in bad.items():
        kwargs = dict(gt_boxes=gt, gt_masks=masks, anchors=anchors, num_anchors_per_level=[6]) | change
        with pytest.raises(ValueError, match=arg):
            ASSIGNERS[name](**kwargs)
    with pytest.raises(ValueError, match=r"\(1, 3\)"):  # the shape is in the message
        ASSIGNERS[name](gt[:, :3], masks, anchors, [6])
    with pytest.raises(ValueError, match="float64"):
        ASSIGNERS[name](gt, masks, anchors.double(), [6])
    with pytest.raises(ValueError, match="gt_masks"):
        ASSIGNERS[name](gt, masks.repeat(2, 1, 1), anchors, [6])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mixed_devices_raise_value_error():
    gt, masks, anchors = _atss_case("cpu")
    with pytest.raises(ValueError, match="anchors"):
        ASSIGNERS["atss_maiou"](gt, masks, anchors.cuda(), [6])
    with pytest.raises(ValueError, match="integral"):
        ASSIGNERS["atss_maiou"](gt, None, anchors, [6], integral=MaskIntegrals.from_masks(masks).to("cuda"))


def _max_iou_by_the_book(overlaps):
    """mmdetection MaxIoUAssigner (pos 0.5, neg 0.4, min_pos_iou 0), written as loops."""
    g_n, a_n = overlaps.shape
    out = [IG] * a_n
    for a in range(a_n):
        col = overlaps[:, a].tolist()
        best = max(col)
        if best < 0.4:
            out[a] = BG
        if best >= 0.5:
            out[a] = col.index(best)  # first (lowest) GT with the best overlap
    for g in range(g_n):
        row = overlaps[g].tolist()
        out[row.index(max(row))] = g  # in GT order: later GTs overwrite
    return out


@pytest.mark.parametrize("seed", range(6))
def test_fixed_iou_equals_by_the_book(seed, device):
    from assigners.overlaps import box_iou
    from tests.assigners.reference import random_case
    gen = torch.Generator().manual_seed(seed)
    gt, _, anchors = random_case(gen, 40, 40, g=6, a=200, integer=True)
    gt[3] = gt[1]  # identical GTs: ties between GTs
    out = ASSIGNERS["fixed_iou"](gt.to(device), None, anchors.to(device), [150, 50])
    assert out.cpu().tolist() == _max_iou_by_the_book(box_iou(gt, anchors))


@pytest.mark.parametrize("name", NAMES)
def test_level_sizes_as_any_int_sequence_and_grad_anchors(name):
    import numpy as np
    gt, masks, anchors = _atss_case("cpu")
    expect = ASSIGNERS[name](gt, masks, anchors, [6])
    assert torch.equal(ASSIGNERS[name](gt, masks, anchors, (np.int64(6),)), expect)
    with pytest.raises(ValueError, match="num_anchors_per_level"):
        ASSIGNERS[name](gt, masks, anchors, torch.tensor([6]))
    with pytest.raises(ValueError, match="num_anchors_per_level"):
        ASSIGNERS[name](gt, masks, anchors, [7, -1])
    # anchors straight out of a model that tracks gradients: the assignment does not
    assert torch.equal(ASSIGNERS[name](gt, masks, anchors.clone().requires_grad_(), [6]), expect)
