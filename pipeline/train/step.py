"""One training step and the schedule around it (docs/design.md §9). Pure torch: Ray lives in loop.py and run.py.

`train_step(model, batch, assign_fn, optimizer, ...)`:
  batch → model (bf16 autocast on CUDA only) → `assign_fn.batch`: the whole batch in one call
  (the assigners' batch contract, with the targets' `integrals`) → `losses_fn` (model.losses) →
  backward → clip the gradient norm at 35 → one all-ranks finiteness vote → SGD step → the
  logged scalars as 0-d tensors, turned into floats once per logging window (`stats_to_floats`).

A non-finite loss or gradient norm skips the whole step on every rank: no update, gradients
dropped, BatchNorm running statistics put back, `skipped = 1` in the returned dict for the
caller to count and log. Every rank runs backward (so DDP ranks never disagree about it), then
the vote is one all-reduce; its answer is the step's only read of a tensor value on the host.

Learning rate (`lr_factor`): the SGD learning rate is `scaled_lr` (lr × global batch /
lr_reference_batch, the linear scaling rule) times
- step: 0.1^(number of milestones ≤ iteration); milestones = step_epochs × iterations per epoch;
- cosine: ½(1 + cos(π·it/total)) down to 0 (maYOLACT's `min_lr_ratio=0`), per iteration;
and, during the first `warmup_iters`, times the linear warm-up `r + (1 − r)·it/warmup_iters`
(mmdet's linear warm-up, r = 0.1). `max_iters` truncates the schedule; milestones stay in epochs.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pipeline.config import TrainConfig, resolve_mask_loss_weight
from pipeline.eval.runtime import amp_active, autocast

STEP_DECAY = 0.1  # docs/design.md §9: ×0.1 at each milestone
SCHEDULES = ("step", "cosine")
LOSS_PREFIX = "loss_"


def scaled_lr(lr: float, global_batch: int, reference_batch: int) -> float:
    """Linear scaling rule: `lr` is quoted for `reference_batch` images per step."""
    if global_batch <= 0 or reference_batch <= 0:
        raise ValueError(f"batch sizes must be positive, got global_batch={global_batch}, "
                         f"reference_batch={reference_batch}")
    return lr * global_batch / reference_batch


def lr_factor(iteration: int, *, total_iters: int, warmup_iters: int, warmup_ratio: float,
              schedule: str, milestones: tuple[int, ...] = ()) -> float:
    """Multiplier of the base learning rate at `iteration` (0-based, the step about to run)."""
    if schedule == "step":
        factor = STEP_DECAY ** sum(iteration >= m for m in milestones)
    elif schedule == "cosine":
        progress = min(iteration, total_iters) / max(total_iters, 1)
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {list(SCHEDULES)}")
    if iteration < warmup_iters:
        factor *= warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iters
    return factor


def total_iterations(cfg: TrainConfig, iters_per_epoch: int) -> int:
    """`max_iters` when set, else `epochs` full epochs."""
    if iters_per_epoch <= 0:
        raise ValueError(f"iters_per_epoch must be positive, got {iters_per_epoch} (dataset "
                         "smaller than one global batch?)")
    return cfg.max_iters if cfg.max_iters is not None else cfg.epochs * iters_per_epoch


def make_lr_lambda(cfg: TrainConfig, iters_per_epoch: int) -> Callable[[int], float]:
    """The schedule of a run as a `LambdaLR` function of the iteration."""
    return partial(lr_factor, total_iters=total_iterations(cfg, iters_per_epoch),
                   warmup_iters=cfg.warmup_iters, warmup_ratio=cfg.warmup_ratio,
                   schedule=cfg.schedule,
                   milestones=tuple(e * iters_per_epoch for e in cfg.step_epochs))


OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(model: nn.Module, cfg: TrainConfig, world_size: int):
    """SGD (momentum, weight decay on every parameter as in the official config), or AdamW.

    The scheduler is created by the caller once iterations per epoch are known:
    `torch.optim.lr_scheduler.LambdaLR(opt, make_lr_lambda(cfg, ipe))`.
    """
    lr = scaled_lr(cfg.lr, cfg.batch_size * world_size, cfg.lr_reference_batch)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"train.optimizer={cfg.optimizer!r} is not one of {OPTIMIZERS}")


def loss_weights(cfg: TrainConfig) -> dict[str, float]:
    """The weights `model.losses` takes (docs/design.md §8); the mask weight per `resolve_mask_loss_weight`."""
    return {"loss_cls": cfg.loss_cls, "loss_box": cfg.loss_box,
            "loss_mask": resolve_mask_loss_weight(cfg), "loss_sem": cfg.loss_sem}


@torch.no_grad()
def assign_batch(assign_fn: Callable, out: dict[str, Any], targets: list[dict]) -> Tensor:
    """The batch's assignment int64 [B, A] over the shared anchors: one `assign_fn.batch` call
    (a registered assigner), or `assign_fn` image by image for a plain function."""
    anchors = out["anchors"].detach().float()  # [A, 4]
    per_level = list(out["num_anchors_per_level"])
    boxes, masks = [t["boxes"] for t in targets], [t["masks"] for t in targets]
    integrals = [t.get("integrals") for t in targets]
    if hasattr(assign_fn, "batch"):
        return assign_fn.batch(boxes, masks, anchors, per_level, integrals)
    return torch.stack([assign_fn(b, m, anchors, per_level, i) for b, m, i in zip(boxes, masks, integrals)])


def _all_ranks_finite(*values: Tensor) -> bool:
    """True when every `value` is finite on every DDP rank (one MIN all-reduce; local otherwise)."""
    flag = torch.stack([torch.isfinite(v.detach()).all() for v in values]).all().to(torch.int32).reshape(1)  # [1]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def stats_to_floats(window: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps' logged scalars (0-d tensors) as floats, in one device-to-host transfer."""
    keys = [(i, k) for i, s in enumerate(window) for k, v in s.items() if isinstance(v, Tensor)]
    if not keys:
        return window
    values = torch.stack([window[i][k].detach().double() for i, k in keys]).tolist()  # [K]
    out = [dict(s) for s in window]
    for (i, k), v in zip(keys, values):
        out[i][k] = v
    return out


@torch.no_grad()
def _restore(buffers: list[Tensor], saved: list[Tensor]) -> None:
    for b, s in zip(buffers, saved):
        b.copy_(s)


def _float32(out: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.float() if isinstance(v, Tensor) and v.is_floating_point() else v)
            for k, v in out.items()}


def train_step(model: nn.Module, images: Tensor, targets: list[dict], assign_fn: Callable,
               optimizer: torch.optim.Optimizer, *, losses_fn: Callable, weights: dict[str, Any],
               grad_clip: float | None = 35.0, amp: bool = False) -> dict[str, Any]:
    """One SGD step; returns `loss`, each `loss_*`, `num_pos`, `grad_norm` as 0-d tensors (for
    `stats_to_floats`) and `skipped` (0.0 or 1.0).

    `images` [B,3,S,S] and `targets` are already on the model's device. Positives are the
    anchors assigned a GT index (>= 0; the assigners' sentinels are negative).
    """
    model.train()
    device = images.device
    # BatchNorm running statistics change in the forward pass: a skipped step puts them back, so
    # that a non-finite batch leaves no trace in the model (NaN statistics would never recover).
    buffers = list(model.buffers())
    saved = [b.detach().clone() for b in buffers]
    with autocast(device, amp):
        out = model(images)
    if amp_active(device, amp):
        out = _float32(out)
    matched = assign_batch(assign_fn, out, targets)  # [B, A]
    losses = losses_fn(out, targets, matched, weights)
    total = sum(v for k, v in losses.items() if k.startswith(LOSS_PREFIX))
    stats = {k: v.detach() for k, v in losses.items() if k.startswith(LOSS_PREFIX)}
    stats["loss"] = total.detach()
    stats["num_pos"] = (matched >= 0).sum()
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if grad_clip:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    stats["grad_norm"] = norm.detach()
    # Gradients are identical on every rank after DDP's all-reduce; the loss is voted on too.
    if not _all_ranks_finite(total, norm):
        optimizer.zero_grad(set_to_none=True)
        _restore(buffers, saved)
        return {**stats, "skipped": 1.0}
    optimizer.step()
    return {**stats, "skipped": 0.0}
