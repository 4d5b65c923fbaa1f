"""`train_step` on real batches, a real YOLACT and every registered assigner (CPU, in-process)."""
from dataclasses import replace

import pytest
import torch

from assigners import ASSIGNERS
from pipeline.train.parts import build_parts
from pipeline.train.step import stats_to_floats, train_step
from tests.pipeline.train_support import tiny_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return tiny_config(tmp_path_factory.mktemp("step"))


@pytest.fixture(scope="module")
def parts_by_grid(cfg):
    """One model per anchor grid (YOLACT's for fixed IoU, ATSS's otherwise), built once."""
    torch.manual_seed(0)
    return {name: build_parts(replace(cfg, train=replace(cfg.train, assigner=name)), rank=0,
                              world=1, device=CPU) for name in ("fixed_iou", "atss_iou")}


def _first_batch(parts):
    return parts.to_device(next(iter(parts.loader(epoch=0, start_batch=0))))


def _step(parts, images, targets, assign_fn=None, **kwargs):
    """One `train_step` with the parts' defaults, its stats as floats (as the loop logs them)."""
    kwargs = dict(losses_fn=parts.losses_fn, weights=parts.weights) | kwargs
    optimizer = kwargs.pop("optimizer", parts.optimizer)
    stats = train_step(parts.model, images, targets, assign_fn or parts.assign_fn, optimizer, **kwargs)
    return stats_to_floats([stats])[0]


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("assigner", list(ASSIGNERS))
def test_step_has_finite_losses_positives_and_updates(parts_by_grid, assigner):
    parts = parts_by_grid["fixed_iou" if assigner == "fixed_iou" else "atss_iou"]
    images, targets = _first_batch(parts)
    before = _params(parts.model)
    stats = _step(parts, images, targets, ASSIGNERS[assigner])
    assert stats["skipped"] == 0.0
    assert {"loss", "loss_cls", "loss_box", "loss_mask", "loss_sem", "num_pos", "grad_norm"} <= set(stats)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert stats["num_pos"] >= 1
    assert stats["loss"] == pytest.approx(sum(v for k, v in stats.items() if k.startswith("loss_")),
                                          rel=1e-5)
    after = parts.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "semantic_head" in " ".join(changed)  # the semantic head trains
    assert len(changed) > len(before) // 2


def test_non_finite_loss_skips_the_step(cfg):
    parts = build_parts(cfg, rank=0, world=1, device=CPU)  # fresh: no optimizer state yet
    images, targets = _first_batch(parts)
    before = _params(parts.model)

    def nan_losses(out, tgts, matched, weights):
        result = parts.losses_fn(out, tgts, matched, weights)
        result["loss_mask"] = result["loss_mask"] * float("nan")
        return result

    stats = _step(parts, images, targets, losses_fn=nan_losses)
    assert stats["skipped"] == 1.0
    assert stats["loss_mask"] != stats["loss_mask"]  # NaN reported, not hidden
    assert all(torch.equal(before[k], v) for k, v in parts.model.state_dict().items())
    assert all(p.grad is None for p in parts.model.parameters())
    assert not parts.optimizer.state  # no momentum buffer was created


def test_non_finite_gradient_skips_the_step(parts_by_grid):
    parts = parts_by_grid["atss_iou"]
    images, targets = _first_batch(parts)
    before = _params(parts.model)
    hook = next(parts.model.head.parameters()).register_hook(lambda g: g * float("inf"))
    try:
        stats = _step(parts, images, targets)
    finally:
        hook.remove()
    assert stats["skipped"] == 1.0 and stats["loss"] == stats["loss"]  # the loss was finite
    assert all(torch.equal(before[k], v) for k, v in parts.model.state_dict().items())


def test_grad_clipping_bounds_the_update(parts_by_grid):
    parts = parts_by_grid["atss_iou"]
    images, targets = _first_batch(parts)
    before = [p.detach().clone() for p in parts.model.parameters()]
    plain_sgd = torch.optim.SGD(parts.model.parameters(), lr=1.0)
    stats = _step(parts, images, targets, optimizer=plain_sgd, grad_clip=0.5)
    assert stats["grad_norm"] > 0.5  # clip_grad_norm_ returns the norm before clipping
    step = torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(p.detach() - b) for p, b in zip(parts.model.parameters(), before)]))
    assert float(step) == pytest.approx(0.5, rel=1e-3)  # lr 1 × clipped gradient of norm 0.5


# The vote on finiteness is the step's one read of a tensor value (`_all_ranks_finite`).
CONVERSION_BUDGET = 1
CONVERSIONS = ("item", "__bool__", "__int__", "__float__", "__index__", "tolist")


@pytest.mark.parametrize("assigner", ["fixed_iou", "atss_maiou"])
def test_step_reads_no_tensor_value_but_the_vote(cfg, assigner, monkeypatch):
    """No tensor -> Python conversion in the step, the losses or the assigners (each is a host
    sync on an accelerator): the logged values stay tensors until the logging window ends."""
    parts = build_parts(replace(cfg, train=replace(cfg.train, assigner=assigner, optimizer="sgd")),
                        rank=0, world=1, device=CPU)
    images, targets = _first_batch(parts)
    calls = []
    for name in CONVERSIONS:
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _f=original, _n=name, **k: (
            calls.append(_n), _f(self, *a, **k))[1])
    stats = train_step(parts.model, images, targets, parts.assign_fn, parts.optimizer,
                       losses_fn=parts.losses_fn, weights=parts.weights)
    monkeypatch.undo()
    assert len(calls) <= CONVERSION_BUDGET, calls
    assert stats["skipped"] == 0.0 and float(stats["num_pos"]) >= 1
