"""The model-option rows that are more than a flag (YOLACT++, SipMask, GmaYOLACT) train one real step."""
import math

import pytest
import torch

from pipeline.sweep.grid import Cell, cell_config
from pipeline.train.parts import build_parts
from pipeline.train.step import train_step
from tests.pipeline.train_support import tiny_config

CPU = torch.device("cpu")
pytestmark = pytest.mark.slow  # ~80 s on 2 loaded cores: a ResNet-50 YOLACT++ step among them


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return tmp_path_factory.mktemp("synth")  # the synthetic data, generated once for the module


@pytest.mark.parametrize("variant,assigner", [("sipmask", "atss_maiou"), ("yolact_pp_r50", "fixed_iou"),
                                              ("gmayolact", "atss_gmaiou")])
def test_row_trains_a_step(tmp_path, synth, variant, assigner):
    base = tiny_config(tmp_path, "train.batch_size=1", "data.scale=96", synth=synth)
    cfg = cell_config(base, Cell(96, assigner, 0, variant), "rows")
    torch.manual_seed(0)
    parts = build_parts(cfg, rank=0, world=1, device=CPU)
    images, targets = parts.to_device(next(iter(parts.loader(epoch=0))))
    before = [p.detach().clone() for p in parts.model.parameters()]
    stats = train_step(parts.model, images, targets, parts.assign_fn, parts.optimizer,
                       losses_fn=parts.losses_fn, weights=parts.weights)
    assert stats["skipped"] == 0.0 and math.isfinite(stats["loss"]) and stats["num_pos"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, parts.model.parameters()))
    expect = {"sipmask": {"loss_cls", "loss_box", "loss_mask", "loss_sem"},
              "yolact_pp_r50": {"loss_cls", "loss_box", "loss_mask", "loss_sem", "loss_maskiou"},
              "gmayolact": {"loss_rank", "loss_sort", "loss_box", "loss_mask", "loss_sem"}}[variant]
    assert {k for k in stats if k.startswith("loss_")} == expect
