"""Fig. 2 (loss terms by MOB): the per-anchor terms are training's terms, the bins are plain
means and stds, and `jobs.analyze --checkpoint` writes and logs the three panels."""
import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow import MlflowClient

from assigners import ASSIGNERS, MaskIntegrals
from jobs import analyze
from model import losses
from pipeline.eval.model_files import build_model
from pipeline.report import loss_by_mob as L
from pipeline.tracking import resolve_tracking_uri
from tests.pipeline.train_support import tiny_config


def test_bins_equal_a_loop_over_the_bins():
    rng = np.random.default_rng(0)
    mob = np.concatenate([rng.uniform(0, 1, 50), [1.0, 1.03, 0.0, 0.1, 0.35]])  # edges, a MOB over 1
    loss = rng.gamma(2.0, 1.0, len(mob))
    s = L.bin_stats("positive", "box", mob, loss)
    for i, (lo, hi) in enumerate(zip(L.MOB_EDGES[:-1], L.MOB_EDGES[1:])):
        last = i == len(L.MOB_EDGES) - 2
        inside = (mob >= lo) & ((mob < hi) | (last & (mob >= hi)))
        assert s.counts[i] == inside.sum()
        if inside.any():
            assert s.means[i] == pytest.approx(loss[inside].mean()) and s.stds[i] == pytest.approx(loss[inside].std())
        else:
            assert math.isnan(s.means[i]) and math.isnan(s.stds[i])
    empty = L.bin_stats("negative", "cls", np.zeros(0), np.zeros(0))
    assert empty.counts.sum() == 0 and np.isnan(empty.means).all()


def _scene(seed=0, size=64, A_side=8):
    """A random model output over a real ATSS-like grid and two GTs with masks."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.arange(A_side, dtype=torch.float32) * 8
    cy, cx = torch.meshgrid(xs, xs, indexing="ij")
    centres = torch.stack((cx, cy), -1).reshape(-1, 2)  # [A, 2]
    anchors = torch.cat((centres - 10, centres + 10), 1)  # [A, 4]
    A = anchors.shape[0]
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 18.0, 58.0, 50.0]])
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    masks[0, 6:40, 4:16] = True  # a thin mask: low MOB
    masks[1, 18:50, 20:58] = True  # a full box: MOB 1
    out = {"cls": torch.randn(1, A, 4, generator=g), "box": torch.randn(1, A, 4, generator=g) * 0.3,
           "coef": torch.randn(1, A, 6, generator=g), "proto": torch.rand(1, 6, 16, 16, generator=g),
           "anchors": anchors, "num_anchors_per_level": [A], "image_size": (size, size)}
    target = {"boxes": boxes, "labels": torch.tensor([0, 2]), "masks": masks,
              "integrals": MaskIntegrals.from_masks(masks)}
    return out, target


def test_per_anchor_terms_are_the_training_losses(monkeypatch):
    out, target = _scene()
    matched = ASSIGNERS["fixed_iou"](target["boxes"], target["masks"], out["anchors"], [out["anchors"].shape[0]],
                                     integral=target["integrals"])
    pos = matched >= 0
    assert pos.sum() >= 2
    monkeypatch.setattr(L, "POS_IOU", (0.0, 2.0))  # every positive: the terms must add up to training's
    terms = L.image_terms(out, 0, target, matched)
    train = losses(out, [target], [matched], {"loss_box": 1.0, "loss_mask": 1.0}, max_masks=1000)
    n = int(pos.sum())
    assert terms[("positive", "box")][1].sum() == pytest.approx(float(train["loss_box"]) * n, rel=1e-5)
    assert terms[("positive", "mask")][1].mean() == pytest.approx(float(train["loss_mask"]), rel=1e-5)
    # classification: -log softmax at the GT class (+1) for positives, at background for negatives
    logp = F.log_softmax(out["cls"][0], -1)
    idx = pos.nonzero().squeeze(1)
    want = -logp[idx, target["labels"][matched[idx]] + 1]
    assert np.allclose(terms[("positive", "cls")][1], want.double().numpy(), rtol=1e-5)
    # MOB of each positive's GT: |M| / |B|
    mob = target["masks"].sum((1, 2)).double() / ((target["boxes"][:, 2:] - target["boxes"][:, :2]).prod(1).double())
    assert np.allclose(terms[("positive", "box")][0], mob[matched[idx]].numpy(), rtol=1e-5)


def test_negatives_are_selected_by_their_best_iou():
    out, target = _scene(1)
    A = out["anchors"].shape[0]
    matched = torch.full((A,), -1, dtype=torch.long)  # all background
    terms = L.image_terms(out, 0, target, matched)
    mob, ce = terms[("negative", "cls")]
    expect_mob, expect_ce = [], []
    for a in range(A):  # the literal selection, one anchor at a time
        ious = [_iou(target["boxes"][g], out["anchors"][a]) for g in range(2)]
        g = int(np.argmax(ious))
        if 0.3 <= ious[g] < 0.5:
            expect_mob.append(float(target["masks"][g].sum()) / _area(target["boxes"][g]))
            expect_ce.append(-float(F.log_softmax(out["cls"][0, a], -1)[0]))
    assert len(ce) == len(expect_ce) > 0
    assert np.allclose(mob, expect_mob, rtol=1e-5) and np.allclose(ce, expect_ce, rtol=1e-5)
    assert len(terms[("positive", "box")][1]) == 0


def _area(b):
    return float((b[2] - b[0]) * (b[3] - b[1]))


def _iou(a, b):
    w = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    h = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    return w * h / (_area(a) + _area(b) - w * h)


@pytest.mark.slow  # synthetic data, a ResNet-18 YOLACT and an MLflow store: about a minute on 2 loaded cores
def test_job_writes_the_panels_and_logs_them(tmp_path, capsys):
    cfg = tiny_config(tmp_path, "train.assigner=atss_iou")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.manual_seed(0)
    torch.save(build_model(cfg, load_pretrained=False).state_dict(), ckpt / "model.pt")
    (ckpt / "config.json").write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "fig2"
    assert analyze.main(["--checkpoint", str(ckpt), "--out", str(out), "--split", "val", "--max-images", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = list(csv.DictReader((out / "loss_by_mob.csv").open()))
    assert len(rows) == len(L.TERMS) * (len(L.MOB_EDGES) - 1)
    assert {(r["kind"], r["term"]) for r in rows} == set(L.TERMS)
    assert (out / "loss_by_mob.png").stat().st_size > 0
    total = sum(int(r["count"]) for r in rows if (r["kind"], r["term"]) == ("positive", "box"))
    assert summary["loss_by_mob/positive_box_count"] == total
    client = MlflowClient(resolve_tracking_uri(cfg.tracking))
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["maskaware.kind"] == "analysis"
    assert run.data.metrics["loss_by_mob/positive_box_count"] == total
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "loss_by_mob")}
    assert logged == {"loss_by_mob/loss_by_mob.csv", "loss_by_mob/loss_by_mob.png"}
