"""Fast NMS against greedy NMS, and post-processing back to original image coordinates."""
import pytest
import torch

from model import Yolact, fast_nms, postprocess, standard_nms
from model.nms import nms
from pipeline.config import EvalConfig


def _random_boxes(g, B, N, spread=100.0, size=30.0):
    xy = torch.rand(B, N, 2, generator=g) * spread
    return torch.cat([xy, xy + 5 + torch.rand(B, N, 2, generator=g) * size], dim=-1)


def _as_sets(results):
    return [set(zip(i.tolist(), c.tolist())) for i, c, _ in results]


@pytest.mark.parametrize("seed", range(5))
def test_fast_nms_keeps_a_subset_of_greedy_nms(seed):
    g = torch.Generator().manual_seed(seed)
    boxes, scores = _random_boxes(g, 2, 300), torch.rand(2, 300, 4, generator=g)
    fast = _as_sets(fast_nms(boxes, scores, 0.5, top_k=200, score_thr=0.05, max_det=10_000))
    greedy = _as_sets(standard_nms(boxes, scores, 0.5, top_k=200, score_thr=0.05, max_det=10_000))
    for f, s in zip(fast, greedy):
        assert f <= s and len(f) > 0
    assert any(f < s for f, s in zip(fast, greedy))  # dense random boxes: Fast NMS drops strictly more


def test_equal_on_well_separated_boxes():
    g = torch.Generator().manual_seed(0)
    grid = torch.stack(torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij"), -1).view(-1, 2) * 50
    boxes = torch.cat([grid, grid + 20 + 10 * torch.rand(36, 2, generator=g)], -1)[None]  # no overlaps
    scores = torch.rand(1, 36, 3, generator=g)
    fast = fast_nms(boxes, scores, 0.5, 200, 0.05, 100)
    greedy = standard_nms(boxes, scores, 0.5, None, 0.05, 100)
    for (i1, c1, s1), (i2, c2, s2) in zip(fast, greedy):
        assert torch.equal(i1, i2) and torch.equal(c1, c2) and torch.equal(s1, s2)


def test_chain_by_hand():
    # A overlaps B, B overlaps C, A and C are apart: greedy keeps A and C, Fast NMS only A
    boxes = torch.tensor([[[0.0, 0, 10, 10], [2, 0, 12, 10], [4, 0, 14, 10]]])
    scores = torch.tensor([[[0.9], [0.8], [0.7]]])
    assert nms(boxes[0], scores[0, :, 0], 0.5).tolist() == [0, 2]
    idx, cls, sc = fast_nms(boxes, scores, 0.5, 200, 0.05, 100)[0]
    assert idx.tolist() == [0] and cls.tolist() == [0]
    assert standard_nms(boxes, scores, 0.5)[0][0].tolist() == [0, 2]


def test_fast_nms_score_threshold_and_empty():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [50, 50, 60, 60]]])
    scores = torch.tensor([[[0.04, 0.9], [0.5, 0.01]]])
    idx, cls, sc = fast_nms(boxes, scores, 0.5, 200, 0.05, 100)[0]
    assert list(zip(idx.tolist(), cls.tolist())) == [(0, 1), (1, 0)]
    empty = fast_nms(torch.zeros(1, 0, 4), torch.zeros(1, 0, 2))[0]
    assert all(t.numel() == 0 for t in empty)


def _one_detection_output(S=64, Hp=16, A=10, C=3):
    """A hand-built output: anchor 7 says class 2 with a box [16, 8, 48, 40]; the mask is prototype 0."""
    cls = torch.full((1, A, C + 1), -10.0)
    cls[..., 0] = 10.0  # background everywhere
    cls[0, 7] = torch.tensor([-10.0, -10, -10, 10])
    anchors = torch.tensor([[16.0, 8, 48, 40]]).repeat(A, 1)
    proto = torch.zeros(1, 2, Hp, Hp)
    proto[0, 0, 2:10, 4:12] = 10.0  # the object in proto pixels (input / 4)
    coef = torch.zeros(1, A, 2)
    coef[0, 7, 0] = 1.0
    return {"cls": cls, "box": torch.zeros(1, A, 4), "coef": coef, "proto": proto, "anchors": anchors,
            "num_anchors_per_level": [6, 4], "image_size": (S, S)}


def test_postprocess_back_to_original_size():
    out = _one_detection_output()
    (det,) = postprocess(out, [(128, 96)], EvalConfig())
    assert det["labels"].tolist() == [2] and det["labels"].dtype == torch.int64
    torch.testing.assert_close(det["boxes"], torch.tensor([[16 * 1.5, 8 * 2.0, 48 * 1.5, 40 * 2.0]]))
    assert det["scores"][0] > 0.99 and torch.equal(det["scores"], det["mask_scores"])
    assert det["masks"].shape == (1, 128, 96) and det["masks"].dtype == torch.bool
    # proto rows 2..9, cols 4..11 -> original rows 16..79 (×8), cols 24..71 (×6), up to bilinear edges
    rows = det["masks"][0].any(1).nonzero().squeeze(1)
    cols = det["masks"][0].any(0).nonzero().squeeze(1)
    assert abs(rows.min().item() - 16) <= 4 and abs(rows.max().item() - 79) <= 4
    assert abs(cols.min().item() - 24) <= 3 and abs(cols.max().item() - 71) <= 3


def test_postprocess_crops_masks_by_the_predicted_box():
    out = _one_detection_output()
    out["proto"][0, 0] = 10.0  # the prototype fills the image; the crop must bound it
    (det,) = postprocess(out, [(64, 64)], EvalConfig())
    ys, xs = det["masks"][0].nonzero().unbind(1)
    # box [16, 8, 48, 40] padded by 1 proto pixel (4 px) -> [12, 4, 52, 44), bilinear edges ±2
    assert xs.min() >= 10 and xs.max() <= 54 and ys.min() >= 2 and ys.max() <= 46


def test_postprocess_with_nothing_above_threshold():
    out = _one_detection_output()
    out["cls"][0, 7] = torch.tensor([10.0, -10, -10, -10])
    (det,) = postprocess(out, [(30, 40)], EvalConfig())
    assert det["boxes"].shape == (0, 4) and det["masks"].shape == (0, 30, 40)


@pytest.mark.parametrize("options", [dict(anchor_grid="yolact", mask_rescoring=True),
                                     dict(anchor_grid="atss", sipmask=True)])
def test_postprocess_real_model(options):
    torch.manual_seed(0)
    net = Yolact(3, "resnet18", fpn_channels=16, num_protos=4, **options).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64))
    dets = postprocess(out, [(50, 70), (64, 64)], EvalConfig(score_thr=0.0, max_per_img=7))
    for det, (h, w) in zip(dets, [(50, 70), (64, 64)]):
        n = det["boxes"].shape[0]
        assert 0 < n <= 7 and det["masks"].shape == (n, h, w)
        assert (det["boxes"][:, 2] <= w).all() and (det["boxes"][:, 3] <= h).all() and (det["boxes"] >= 0).all()
        assert det["labels"].max() < 3 and torch.all(det["scores"][:-1] >= det["scores"][1:])
    slow = postprocess(out, [(50, 70), (64, 64)], EvalConfig(score_thr=0.0, max_per_img=7, fast_nms=False))
    assert len(slow) == 2


def test_rescoring_multiplies_mask_scores_by_predicted_iou():
    torch.manual_seed(0)
    net = Yolact(3, "resnet18", fpn_channels=16, num_protos=4, mask_rescoring=True).eval()
    with torch.no_grad():
        net.mask_iou_net.conv_out.weight.zero_()
        net.mask_iou_net.conv_out.bias.fill_(0.5)  # predicted IoU 0.5 for every mask and class
        out = net(torch.randn(1, 3, 64, 64))
    (det,) = postprocess(out, [(64, 64)], EvalConfig(score_thr=0.0))
    assert det["scores"].numel() > 0
    torch.testing.assert_close(det["mask_scores"], 0.5 * det["scores"])


def _fast_nms_reference(boxes, scores, iou_thr, top_k, score_thr):
    """Fast NMS by the definition, with loops: per class over its top_k boxes, box i survives when no
    higher-scored box j (kept or not) has IoU > iou_thr with it, and its score > score_thr."""
    from model.box_coding import box_iou
    kept = set()
    for c in range(scores.shape[1]):
        order = scores[:, c].argsort(descending=True)[:top_k].tolist()
        for rank, i in enumerate(order):
            higher = order[:rank]
            overl = box_iou(boxes[i:i + 1], boxes[higher]).max().item() if higher else 0.0
            if overl <= iou_thr and scores[i, c] > score_thr:
                kept.add((i, c))
    return kept


@pytest.mark.parametrize("score_thr", [0.05, 0.5])
def test_fast_nms_matches_its_definition(score_thr):
    g = torch.Generator().manual_seed(7)
    boxes, scores = _random_boxes(g, 1, 60), torch.rand(1, 60, 3, generator=g)
    got = _as_sets(fast_nms(boxes, scores, 0.5, top_k=40, score_thr=score_thr, max_det=10_000))[0]
    assert got == _fast_nms_reference(boxes[0], scores[0], 0.5, 40, score_thr)
