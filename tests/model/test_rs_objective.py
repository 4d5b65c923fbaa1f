"""The RS-YOLACT objective against literal per-anchor references; the sigmoid head end to end."""
import math

import pytest
import torch

from assigners import BACKGROUND, IGNORE
from model import Yolact, postprocess, rank_sort_loss
from model.box_coding import decode
from model.masks import crop_region, mask_logits, resize_masks
from model.rs_objective import rank_sort_objective
from pipeline.config import EvalConfig, apply_overrides, Config
from pipeline.train.parts import objective

C = 3


def _batch(seed=0, positives=True):
    g = torch.Generator().manual_seed(seed)
    A, S = 12, 32
    xy = torch.rand(A, 2, generator=g) * 24
    anchors = torch.cat((xy, xy + 6 + torch.rand(A, 2, generator=g) * 6), 1)  # [A, 4]
    out = {"cls": torch.randn(2, A, C, generator=g, requires_grad=True),
           "box": (torch.randn(2, A, 4, generator=g) * 0.3).requires_grad_(),
           "coef": torch.randn(2, A, 5, generator=g, requires_grad=True),
           "proto": torch.rand(2, 5, 8, 8, generator=g, requires_grad=True),
           "anchors": anchors, "num_anchors_per_level": [A], "image_size": (S, S), "cls_sigmoid": True,
           "sem": torch.randn(2, C, 4, 4, generator=g, requires_grad=True)}
    targets, matched = [], []
    for b in range(2):
        boxes = torch.tensor([[2.0, 3.0, 14.0, 20.0], [10.0, 8.0, 30.0, 28.0]]) + b
        masks = torch.zeros(2, S, S, dtype=torch.bool)
        masks[0, 5:18, 3:12] = True
        masks[1, 9:27, 12:29] = True
        targets.append({"boxes": boxes, "labels": torch.tensor([2, 0]), "masks": masks})
        m = torch.full((A,), BACKGROUND, dtype=torch.long)
        if positives:
            m[[0, 3, 7]] = torch.tensor([0, 1, 1]) if b == 0 else torch.tensor([1, 0, 0])
        m[[5, 9]] = IGNORE
        matched.append(m)
    return out, targets, matched


def _giou(a, b):
    area = lambda x: (x[2] - x[0]) * (x[3] - x[1])  # noqa: E731
    iw, ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0])), max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = area(a) + area(b) - iw * ih
    enclose = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return iw * ih / union - (enclose - union) / enclose, iw * ih / union


def _reference(out, targets, matched):
    """One anchor at a time: RS targets, weighted GIoU and dice losses before self-balancing."""
    logits, goal, box_terms, dice_terms, weights = [], [], [], [], []
    Hp = out["proto"].shape[-1]
    for b, (t, m) in enumerate(zip(targets, matched)):
        for a in range(m.numel()):
            row = [0.0] * C
            if m[a] == IGNORE:
                row = [-1.0] * C
            elif m[a] >= 0:
                gt = t["boxes"][m[a]]
                pred = decode(out["box"][b, a][None], out["anchors"][a][None])[0]
                giou, iou = _giou(pred.tolist(), gt.tolist())
                row[int(t["labels"][m[a]])] = iou
                w = float(out["cls"][b, a].detach().sigmoid().max())
                weights.append(w)
                box_terms.append(w * (1 - _giou_t(pred, gt)))
                pb = gt[None] * Hp / 32
                mk = (mask_logits(out["proto"][b], out["coef"][b, a][None], pb).sigmoid() * crop_region(pb, Hp, Hp))[0]
                gm = resize_masks(t["masks"][m[a]][None], (Hp, Hp))[0].float()
                dice_terms.append(w * 2 * (mk * gm).sum() / ((mk ** 2).sum() + (gm ** 2).sum() + 1e-5))
            logits.append(out["cls"][b, a])
            goal.append(row)
    W = sum(weights)
    return (torch.stack(logits).flatten(), torch.tensor(goal).flatten(), sum(box_terms) / W, 1 - sum(dice_terms) / W)


def _giou_t(a, b):
    """GIoU with autograd through `a` (the literal formula, tensors)."""
    iw = (torch.minimum(a[2], b[2]) - torch.maximum(a[0], b[0])).clamp(min=0)
    ih = (torch.minimum(a[3], b[3]) - torch.maximum(a[1], b[1])).clamp(min=0)
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - iw * ih
    enclose = (torch.maximum(a[2], b[2]) - torch.minimum(a[0], b[0])) * (torch.maximum(a[3], b[3]) - torch.minimum(a[1], b[1]))
    return iw * ih / union - (enclose - union) / enclose


def test_losses_equal_the_literal_reference_and_balance_to_the_rs_value():
    out, targets, matched = _batch()
    got = rank_sort_objective(out, targets, matched, {"loss_sem": 0.5})
    value = {k: float(v.detach()) for k, v in got.items()}
    logits, goal, box_raw, mask_raw = _reference(out, targets, matched)
    rank, sort = rank_sort_loss(logits.detach(), goal)
    assert value["loss_rank"] == pytest.approx(float(rank), rel=1e-6)
    assert value["loss_sort"] == pytest.approx(float(sort), rel=1e-6)
    rs = float(rank + sort)
    # self-balancing: both equal the RS value ...
    assert value["loss_box"] == pytest.approx(rs, rel=1e-5) and value["loss_mask"] == pytest.approx(rs, rel=1e-5)
    # ... with the gradient of the raw weighted loss times rs / its value
    for name, raw, param in (("loss_box", box_raw, "box"), ("loss_mask", mask_raw, "coef")):
        ours = torch.autograd.grad(got[name], out[param], retain_graph=True)[0]
        ref = torch.autograd.grad(raw, out[param], retain_graph=True)[0] * rs / float(raw.detach())
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)
    assert value.get("loss_sem", 0.0) > 0


def test_the_class_logits_get_exactly_the_rs_gradient():
    out, targets, matched = _batch(1)
    got = rank_sort_objective(out, targets, matched)
    sum(got.values()).backward()
    logits, goal, _, _ = _reference(out, targets, matched)
    x = out["cls"].detach().clone().requires_grad_()
    r, s = rank_sort_loss(x.flatten(), goal)
    (r + s).backward()
    torch.testing.assert_close(out["cls"].grad, x.grad)


def test_no_positives_gives_zero_finite_losses():
    out, targets, matched = _batch(2, positives=False)
    got = rank_sort_objective(out, targets, matched)
    assert all(float(v.detach()) == 0.0 for v in got.values())
    sum(got.values()).backward()
    assert torch.isfinite(out["box"].grad).all() and float(out["cls"].grad.abs().sum()) == 0.0


def test_the_objective_and_the_head_must_agree():
    with pytest.raises(ValueError, match="needs model.sigmoid_cls=true"):
        objective(apply_overrides(Config(), ["train.loss=rank_sort"]))
    with pytest.raises(ValueError, match="needs model.sigmoid_cls=false"):
        objective(apply_overrides(Config(), ["model.sigmoid_cls=true"]))
    with pytest.raises(ValueError, match="is not one of"):
        objective(apply_overrides(Config(), ["train.loss=focal"]))
    out, targets, matched = _batch()
    out["cls_sigmoid"] = False
    with pytest.raises(ValueError, match="sigmoid class head"):
        rank_sort_objective(out, targets, matched)


def test_a_sigmoid_head_model_trains_and_postprocesses():
    torch.manual_seed(0)
    model = Yolact(num_classes=C, backbone="resnet18", anchor_grid="atss", fpn_channels=16, num_protos=4,
                   sigmoid_cls=True)
    out = model(torch.randn(2, 3, 64, 64))
    assert out["cls"].shape[-1] == C and out["cls_sigmoid"]
    A = out["anchors"].shape[0]
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 10:40, 12:50] = True
    targets = [{"boxes": torch.tensor([[12.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1]), "masks": masks}] * 2
    m = torch.full((A,), BACKGROUND, dtype=torch.long)
    m[:3] = 0
    losses = rank_sort_objective(out, targets, [m, m], {"loss_sem": 1.0})
    total = sum(losses.values())
    assert math.isfinite(float(total.detach()))
    total.backward()
    model.eval()
    with torch.no_grad():
        dets = postprocess(model(torch.randn(1, 3, 64, 64)), [(64, 64)], EvalConfig(score_thr=0.0))
    assert dets[0]["scores"].numel() > 0 and float(dets[0]["scores"].max()) <= 1.0
    assert int(dets[0]["labels"].max()) < C  # label = index of the sigmoid output, no background
