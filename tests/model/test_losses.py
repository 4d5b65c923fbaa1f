"""Box coding, mask assembly and the losses against hand-computed values and slow references."""
import math

import pytest
import torch
import torch.nn.functional as F

from model import BACKGROUND, IGNORE, Yolact, losses
from model.box_coding import box_iou, decode, encode
from model.losses import classification_loss, positive_targets
from model.masks import crop_region, mask_logits, resize_masks
from model.rescoring import MaskIoUNet


def test_encode_by_hand_and_round_trip():
    anchors = torch.tensor([[0.0, 0, 10, 10], [10, 20, 30, 60]])
    gt = torch.tensor([[1.0, 1, 11, 11], [5, 10, 45, 90]])
    d = encode(gt, anchors)
    torch.testing.assert_close(d[0], torch.tensor([1.0, 1.0, 0.0, 0.0]))  # shift 1 px of a 10 px box / 0.1
    torch.testing.assert_close(d[1], torch.tensor([(25 - 20) / 20 / 0.1, (50 - 40) / 40 / 0.1,
                                                   math.log(2) / 0.2, math.log(2) / 0.2]))
    torch.testing.assert_close(decode(d, anchors), gt)
    huge = decode(torch.tensor([[0.0, 0, 1e4, 1e4]]), anchors[:1])
    assert torch.isfinite(huge).all()


def test_box_iou_matches_brute_force_and_never_nans():
    torch.manual_seed(0)
    xy = torch.rand(7, 2) * 50
    a = torch.cat([xy, xy + torch.rand(7, 2) * 30], 1)
    a[0, 2:] = a[0, :2]  # a zero-area box
    b = a[torch.randperm(7)][:5] + 3
    iou = box_iou(a, b)
    for i in range(7):
        for j in range(5):
            w = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            h = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            area = lambda x: (x[2] - x[0]) * (x[3] - x[1])  # noqa: E731
            union = max(float(area(a[i]) + area(b[j]) - w * h), 1e-6)
            assert abs(iou[i, j].item() - w * h / union) < 1e-5
    assert torch.isfinite(box_iou(a[:1], a[:1])).all()


def test_crop_region_and_quadrants_against_loops():
    boxes = torch.tensor([[2.3, 1.0, 7.5, 6.2], [-3.0, 4.0, 2.0, 20.0]])
    crop = crop_region(boxes, 10, 9)
    for n, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        for r in range(10):
            for c in range(9):
                inside = max(x1 - 1, 0) <= c < min(x2 + 1, 9) and max(y1 - 1, 0) <= r < min(y2 + 1, 10)
                assert bool(crop[n, r, c]) == inside
    torch.manual_seed(0)
    proto, coef = torch.randn(3, 10, 9), torch.randn(2, 4, 3)
    got = mask_logits(proto, coef, boxes).sigmoid() * crop
    ref = torch.zeros(2, 10, 9)  # SipMask: the four quadrant-cropped masks, summed
    for n, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        xc, yc = (x1 + x2) / 2, (y1 + y2) / 2
        for q in range(4):
            m = torch.sigmoid(torch.einsum("k,khw->hw", coef[n, q], proto))
            rows = torch.arange(10)[:, None].float()
            cols = torch.arange(9)[None, :].float()
            in_q = ((rows >= yc) if q >= 2 else (rows < yc)) & ((cols >= xc) if q % 2 else (cols < xc))
            ref[n] += m * in_q * crop[n]
    torch.testing.assert_close(got, ref)


def _toy_out(B=1, A=6, C=2, k=3, Hp=8, S=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {"cls": torch.randn(B, A, C + 1, generator=g), "box": torch.randn(B, A, 4, generator=g) * 0.1,
           "coef": torch.randn(B, A, k, generator=g).tanh(), "proto": torch.rand(B, k, Hp, Hp, generator=g),
           "anchors": torch.tensor([[0.0, 0, 16, 16], [8, 8, 24, 24], [16, 16, 32, 32], [0, 16, 16, 32],
                                    [4, 4, 12, 12], [20, 0, 32, 12]])[:A],
           "num_anchors_per_level": [A], "image_size": (S, S)}
    for v in ("cls", "box", "coef", "proto"):
        out[v].requires_grad_(True)
    return out


def _toy_target(S=32):
    masks = torch.zeros(2, S, S, dtype=torch.bool)
    masks[0, 2:14, 3:13] = True
    masks[1, 18:30, 16:31] = True
    return {"boxes": torch.tensor([[3.0, 2, 13, 14], [16, 18, 31, 30]]), "labels": torch.tensor([1, 0]),
            "masks": masks}


def test_classification_ohem_by_hand():
    cls = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [0.0, 0.0], [-1.0, 2.0], [5.0, 0.0]]])
    target = torch.tensor([[1, 0, 0, 0, 0, 0]])
    pos = target > 0
    neg = torch.tensor([[False, True, True, True, False, True]])  # anchor 4 ignored despite its high CE
    ce = F.cross_entropy(cls[0], target[0], reduction="none")
    # 1 positive -> 3 hardest negatives among {1, 2, 3, 5}: CE 3.05, 0.69, 0.69 (anchor 5 is easy)
    expected = ce[0] + ce[1] + ce[2] + ce[3]
    torch.testing.assert_close(classification_loss(cls, target, pos, neg, 3), expected)
    none = torch.zeros_like(pos)  # no positive: every negative counts (mmdet)
    torch.testing.assert_close(classification_loss(cls, torch.zeros_like(target), none, neg, 3), ce[[1, 2, 3, 5]].sum())


def test_losses_against_a_slow_reference():
    out, t = _toy_out(), _toy_target()
    matched = torch.tensor([0, BACKGROUND, 1, IGNORE, 0, BACKGROUND])
    got = losses(out, [t], [matched], {"loss_mask": 6.125})
    pos = [0, 2, 4]
    labels = torch.tensor([2, 0, 1, 0, 2, 0])
    ce = F.cross_entropy(out["cls"][0], labels, reduction="none")
    cls_ref = ce[pos].sum() + ce[[1, 5]].sum()  # 2 negatives available, fewer than 3·3
    torch.testing.assert_close(got["loss_cls"], cls_ref / 3)
    gt_boxes = t["boxes"][torch.tensor([0, 1, 0])]
    box_ref = F.smooth_l1_loss(out["box"][0, pos], encode(gt_boxes, out["anchors"][pos]), reduction="sum")
    torch.testing.assert_close(got["loss_box"], 1.5 * box_ref / 3)
    mask_ref = 0.0
    for a, g in zip(pos, (0, 1, 0)):
        pred = torch.sigmoid(torch.einsum("k,khw->hw", out["coef"][0, a], out["proto"][0]))
        small = F.interpolate(t["masks"][g][None, None].float(), size=(8, 8), mode="bilinear")[0, 0] > 0.5
        box = t["boxes"][g] / 4  # proto is 8 px for a 32 px input
        total = 0.0
        for r in range(8):
            for c in range(8):
                if box[0] - 1 <= c < box[2] + 1 and box[1] - 1 <= r < box[3] + 1:
                    p, y = pred[r, c], float(small[r, c])
                    total = total - (y * torch.log(p) + (1 - y) * torch.log(1 - p))
        mask_ref = mask_ref + total / ((box[2] - box[0]) * (box[3] - box[1]))
    torch.testing.assert_close(got["loss_mask"], 6.125 * mask_ref / 3)
    assert set(got) == {"loss_cls", "loss_box", "loss_mask"}
    sum(got.values()).backward()
    assert all(torch.isfinite(out[k].grad).all() for k in ("cls", "box", "coef", "proto"))


def test_semantic_loss_by_hand():
    out, t = _toy_out(), _toy_target()
    out["sem"] = torch.zeros(1, 2, 4, 4, requires_grad=True)
    got = losses(out, [t], [torch.full((6,), BACKGROUND)], {"loss_sem": 1.0})
    # zero logits: BCE = log 2 per pixel whatever the target -> sum / (B·H·W) = 2 classes · log 2
    torch.testing.assert_close(got["loss_sem"], torch.tensor(2 * math.log(2)))
    goal = resize_masks(t["masks"], (4, 4))
    out["sem"] = torch.where(torch.stack([goal[1], goal[0]])[None], 20.0, -20.0).requires_grad_(True)
    assert losses(out, [t], [torch.full((6,), BACKGROUND)])["loss_sem"] < 1e-6  # class 0 = mask 1


def test_empty_targets_are_finite():
    out = _toy_out(B=2)
    out["sem"] = torch.randn(2, 2, 4, 4, requires_grad=True)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
             "masks": torch.zeros(0, 32, 32, dtype=torch.bool)}
    got = losses(out, [empty, empty], [torch.full((6,), BACKGROUND)] * 2)
    assert got["loss_box"] == 0 and got["loss_mask"] == 0 and got["loss_sem"] == 0 and got["loss_cls"] > 0
    assert all(torch.isfinite(v) for v in got.values())
    sum(got.values()).backward()
    ce = F.cross_entropy(out["cls"].detach().flatten(0, 1), torch.zeros(12, dtype=torch.long), reduction="sum")
    torch.testing.assert_close(got["loss_cls"], ce / 2)  # all negatives, N = Σ max(#pos, 1) = 2


def test_max_masks_uses_a_random_subset():
    out, t = _toy_out(), _toy_target()
    matched = torch.tensor([0, 1, 0, 1, 0, 1])
    full = losses(out, [t], [matched], max_masks=100)["loss_mask"]
    sub = losses(out, [t], [matched], max_masks=2, generator=torch.Generator().manual_seed(3))["loss_mask"]
    keep = torch.arange(6)[torch.randperm(6, generator=torch.Generator().manual_seed(3))[:2]]
    only = matched.clone()
    only[[i for i in range(6) if i not in keep.tolist()]] = BACKGROUND
    torch.testing.assert_close(sub, losses(out, [t], [only])["loss_mask"])
    assert not torch.isclose(sub, full)


def test_mask_alignment_weights_have_mean_one():
    out, t = _toy_out(), _toy_target()
    matched = torch.tensor([0, BACKGROUND, 1, BACKGROUND, 0, BACKGROUND])
    plain = losses(out, [t], [matched])["loss_mask"]
    weighted = losses(out, [t], [matched], mask_alignment=True)["loss_mask"]
    assert torch.isfinite(weighted) and not torch.isclose(plain, weighted)
    same = {**out, "cls": torch.zeros_like(out["cls"]), "box": torch.zeros_like(out["box"]),
            "anchors": t["boxes"][torch.tensor([0, 0, 1, 0, 0, 0])]}  # every box exact, equal scores: α = 1
    torch.testing.assert_close(losses(same, [t], [matched], mask_alignment=True)["loss_mask"],
                               losses(same, [t], [matched])["loss_mask"])


def test_maskiou_loss_trains_the_rescoring_net():
    torch.manual_seed(0)
    S, Hp = 128, 32
    out = _toy_out(Hp=Hp, S=S)
    net = MaskIoUNet(2)
    out["mask_iou_net"] = net
    t = _toy_target(S)
    t["boxes"], t["masks"] = t["boxes"] * 4, torch.zeros(2, S, S, dtype=torch.bool)
    t["masks"][0, 8:56, 12:52] = True
    t["masks"][1, 72:120, 64:124] = True
    got = losses(out, [t], [torch.tensor([0, BACKGROUND, 1, BACKGROUND, 0, BACKGROUND])])
    assert torch.isfinite(got["loss_maskiou"]) and got["loss_maskiou"] >= 0
    got["loss_maskiou"].backward()
    assert net.conv_out.weight.grad is not None and out["coef"].grad is not None  # input not detached


def test_bad_assignments_are_rejected():
    out, t = _toy_out(), _toy_target()
    # values are checked in debug mode (host syncs), shapes always
    with pytest.raises(ValueError, match="matched\\[0\\] holds 2"):
        losses(out, [t], [torch.tensor([0, 2, 1, 0, 0, 0])], check_values=True)
    with pytest.raises(ValueError, match="holds -3"):
        losses(out, [t], [torch.tensor([0, -3, 1, 0, 0, 0])], check_values=True)
    with pytest.raises(ValueError, match=r"expected \(1, 6\)"):
        losses(out, [t], torch.zeros((1, 5), dtype=torch.long))
    with pytest.raises(ValueError, match="unknown loss weights"):
        losses(out, [t], [torch.zeros(6, dtype=torch.long)], {"loss_bbox": 1.0})
    assert (BACKGROUND, IGNORE) == (-1, -2)


def test_sentinels_agree_with_assigners():
    assigners = pytest.importorskip("assigners")
    if not hasattr(assigners, "BACKGROUND"):
        pytest.skip("assigners does not export its sentinels yet")
    assert (assigners.BACKGROUND, assigners.IGNORE) == (BACKGROUND, IGNORE)


@pytest.mark.parametrize("options", [dict(anchor_grid="atss"), dict(anchor_grid="atss", sipmask=True),
                                     dict(anchor_grid="yolact", mask_rescoring=True)])
def test_losses_on_real_model_output(options):
    torch.manual_seed(0)
    net = Yolact(2, "resnet18", fpn_channels=16, num_protos=4, **options)
    out = net(torch.randn(1, 3, 64, 64))
    t = _toy_target(64)
    t["boxes"] = t["boxes"] * 2
    t["masks"] = resize_masks(t["masks"], (64, 64))
    A = out["anchors"].shape[0]
    matched = torch.full((A,), BACKGROUND)
    matched[:5] = 0
    matched[-3:] = 1
    got = losses(out, [t], [matched], mask_alignment=options.get("sipmask", False))
    assert all(torch.isfinite(v) for v in got.values())
    sum(got.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def _positive_targets_per_image(targets, m):
    """The per-image loop `losses` ran before the batch gather (the slow reference)."""
    cls_target, gt_pos = torch.zeros_like(m), []
    for b, t in enumerate(targets):
        p = m[b] >= 0
        cls_target[b, p] = t["labels"][m[b, p]] + 1
        gt_pos.append(t["boxes"][m[b, p]].float())
    return cls_target, torch.cat(gt_pos)


@pytest.mark.parametrize("gts", [[0, 0], [3, 0, 5], [1, 4, 2, 0]])
def test_positive_targets_equal_the_per_image_loop(gts):
    gen = torch.Generator().manual_seed(sum(gts))
    a = 50
    targets = [{"boxes": torch.rand(g, 4, generator=gen) * 100, "labels": torch.randint(0, 5, (g,), generator=gen)}
               for g in gts]
    m = torch.stack([torch.randint(-2, max(g, 1), (a,), generator=gen) if g else torch.full((a,), BACKGROUND)
                     for g in gts])  # [B, A]: GT indices, BACKGROUND and IGNORE
    cls_target, gt_pos = positive_targets(targets, m)
    expect_cls, expect_pos = _positive_targets_per_image(targets, m)
    assert torch.equal(cls_target, expect_cls) and torch.equal(gt_pos, expect_pos)
    assert gt_pos.shape == (int((m >= 0).sum()), 4)
