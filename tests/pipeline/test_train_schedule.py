"""LR schedule, linear scaling and the deterministic data order, checked against hand values."""
import math

import pytest
import torch

from pipeline.config import TrainConfig
from pipeline.data.shards import ResumableBatchSampler, derive_seed, iters_per_epoch
from pipeline.train.step import lr_factor, make_lr_lambda, scaled_lr, total_iterations


def test_linear_scaling_rule():
    assert scaled_lr(4e-3, 32, 32) == pytest.approx(4e-3)
    assert scaled_lr(4e-3, 8, 32) == pytest.approx(1e-3)
    assert scaled_lr(4e-3, 64, 32) == pytest.approx(8e-3)
    with pytest.raises(ValueError, match="global_batch"):
        scaled_lr(4e-3, 0, 32)


def test_warmup_is_linear_from_a_tenth():
    f = dict(total_iters=10_000, warmup_iters=500, warmup_ratio=0.1, schedule="step", milestones=())
    assert lr_factor(0, **f) == pytest.approx(0.1)
    assert lr_factor(250, **f) == pytest.approx(0.55)  # 0.1 + 0.9 * 250/500
    assert lr_factor(499, **f) == pytest.approx(0.1 + 0.9 * 499 / 500)
    assert lr_factor(500, **f) == pytest.approx(1.0)


def test_step_decay_at_epoch_milestones():
    cfg = TrainConfig(epochs=55, warmup_iters=0)  # step_epochs (20, 42, 49, 52)
    lam = make_lr_lambda(cfg, iters_per_epoch=10)
    assert lam(0) == pytest.approx(1.0)
    assert lam(199) == pytest.approx(1.0)
    assert lam(200) == pytest.approx(0.1)
    assert lam(419) == pytest.approx(0.1)
    assert lam(420) == pytest.approx(0.01)
    assert lam(490) == pytest.approx(1e-3)
    assert lam(520) == pytest.approx(1e-4)
    assert lam(549) == pytest.approx(1e-4)
    assert total_iterations(cfg, 10) == 550


def test_cosine_with_warmup():
    f = dict(total_iters=100, warmup_iters=10, warmup_ratio=0.1, schedule="cosine")
    assert lr_factor(50, **f) == pytest.approx(0.5)
    assert lr_factor(100, **f) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(5, **f) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.05)) * 0.55)


def test_max_iters_truncates_and_unknown_schedule_fails():
    assert total_iterations(TrainConfig(epochs=55, max_iters=150), 25) == 150
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(0, total_iters=1, warmup_iters=0, warmup_ratio=0.1, schedule="poly")
    with pytest.raises(ValueError, match="iters_per_epoch"):
        total_iterations(TrainConfig(), 0)


def test_lambda_lr_drives_sgd_learning_rate():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.02)
    cfg = TrainConfig(warmup_iters=4, warmup_ratio=0.1, step_epochs=(1,))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, make_lr_lambda(cfg, iters_per_epoch=6))
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [0.02 * f for f in (0.1, 0.325, 0.55, 0.775, 1, 1, 0.1, 0.1)]
    assert seen == pytest.approx(want)


def test_batches_resume_mid_epoch():
    keys = [(i, 0, 3) for i in (5, 2, 9, 1, 7, 0, 4)]
    full = list(ResumableBatchSampler(keys, batch_size=2))
    assert full == [keys[0:2], keys[2:4], keys[4:6]]  # the odd key out is dropped
    assert list(ResumableBatchSampler(keys, 2, start_batch=1)) == full[1:]
    assert len(ResumableBatchSampler(keys, 2, start_batch=3)) == 0
    assert iters_per_epoch(7, 2) == 3
    with pytest.raises(ValueError, match="start_batch"):
        ResumableBatchSampler(keys, 2, start_batch=4)


def test_derived_seeds_differ_per_key():
    seeds = {derive_seed(0, r) for r in range(8)} | {derive_seed(1, 0)}
    assert len(seeds) == 9 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(3, 1) == derive_seed(3, 1)


def test_optimizer_choice_keeps_the_scaled_lr_and_rejects_unknown_names():
    from pipeline.train.step import build_optimizer

    model = torch.nn.Linear(3, 2)
    sgd = build_optimizer(model, TrainConfig(batch_size=8, lr=4e-3), world_size=2)  # global batch 16
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["lr"] == pytest.approx(2e-3) and sgd.defaults["momentum"] == 0.9
    adamw = build_optimizer(model, TrainConfig(optimizer="adamw", batch_size=8, lr=4e-3, weight_decay=0.05),
                            world_size=2)
    assert isinstance(adamw, torch.optim.AdamW)
    assert (adamw.defaults["lr"], adamw.defaults["weight_decay"]) == pytest.approx((2e-3, 0.05))
    with pytest.raises(ValueError, match="train.optimizer"):
        build_optimizer(model, TrainConfig(optimizer="adam"), world_size=1)
