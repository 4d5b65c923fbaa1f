"""Rank & Sort Loss (Oksuz et al., ICCV 2021), as the official `RankSort` autograd function has it.

`rank_sort_loss(logits [N], targets [N], delta_rs=0.5) -> (ranking_loss, sorting_loss)`:
- positives: `targets > 0` (the value is the positive's continuous target, e.g. an IoU);
  negatives: `targets == 0`; `targets < 0` is ignored;
- only negatives scoring at least `min(positive logits) - delta_rs` are relevant (lower ones
  cannot change any positive's precision);
- relations use the smoothed step H(x) = clamp(x / (2·delta_rs) + 0.5, 0, 1) (a hard step x ≥ 0
  for delta_rs = 0), a positive's relation to itself included (H(0) = 0.5);
- for each positive i: rank_pos_i = Σ_{j∈P} H(s_j − s_i), FP_i = Σ_{relevant n} H(s_n − s_i);
  ranking error FP_i / (rank_pos_i + FP_i); sorting error Σ_j H(s_j − s_i)(1 − t_j) / rank_pos_i
  minus the same over the positives with t_j ≥ t_i (the target sorting error);
- the returned losses are the means over positives.

The gradient is the official error-driven update, not autograd of the forward: positive i gets
−(its ranking error), which its relevant negatives share in proportion to H(s_n − s_i) (when
FP_i > eps); and −(its sorting error), which its missorted positives (t_j < t_i) share in
proportion to H(s_j − s_i) (when there are any); everything is divided by the number of
positives. `backward` scales that by the ranking output's incoming gradient and ignores the
sorting output's (as the official code does), so `(ranking + sorting).backward()` applies it once.

Vectorised over positives in chunks (memory O(chunk · N)); any device; no host syncs. Without
positives both losses are 0 and the gradient is 0 (the official code fails on `min()` of nothing).
"""
from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-10  # the official threshold below which an error has no one to share it with
CHUNK_ELEMENTS = 1 << 24  # positives per chunk × (positives + relevant negatives) at most


def _step(x: Tensor, delta: float) -> Tensor:
    """H(x): the smoothed step of width 2·delta (a hard step x ≥ 0 for delta = 0)."""
    if delta > 0:
        return (x / (2 * delta) + 0.5).clamp(0, 1)
    return (x >= 0).to(x.dtype)


def _errors_and_grads(pos: Tensor, t: Tensor, neg: Tensor, delta: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per positive ranking and sorting errors [P], and the unnormalised updates of the
    positives [P] and the relevant negatives [N]."""
    num_pos = pos.shape[0]
    ranking, sorting = pos.new_zeros(num_pos), pos.new_zeros(num_pos)
    pos_grad, neg_grad = pos.new_zeros(num_pos), pos.new_zeros(neg.shape[0])
    chunk = max(1, CHUNK_ELEMENTS // max(1, num_pos + neg.shape[0]))
    for lo in range(0, num_pos, chunk):
        i = slice(lo, lo + chunk)
        fg = _step(pos[None, :] - pos[i, None], delta)  # [c, P]: H(s_j − s_i)
        bg = _step(neg[None, :] - pos[i, None], delta)  # [c, N]: H(s_n − s_i)
        rank_pos, fp = fg.sum(1), bg.sum(1)  # [c]
        ranking[i] = fp / (rank_pos + fp)
        current = (fg * (1 - t)[None, :]).sum(1) / rank_pos  # [c]
        above = t[None, :] >= t[i, None]  # [c, P]: positives at or above i in the target order
        target_sorted = above * fg  # [c, P]
        target = (target_sorted * (1 - t)[None, :]).sum(1) / target_sorted.sum(1)  # [c]
        sorting[i] = current - target
        has_fp = fp > EPS  # [c]
        pos_grad[i] -= torch.where(has_fp, ranking[i], 0.0)
        neg_grad += (bg * torch.where(has_fp, ranking[i] / fp, 0.0)[:, None]).sum(0)  # [N]
        missorted = (~above) * fg  # [c, P]: lower target, higher score
        denom = missorted.sum(1)  # [c]
        has_missorted = denom > EPS
        pos_grad[i] -= torch.where(has_missorted, sorting[i], 0.0)
        share = torch.where(has_missorted, sorting[i] / denom.clamp(min=EPS), 0.0)  # [c]
        pos_grad += (missorted * share[:, None]).sum(0)  # [P]
    return ranking, sorting, pos_grad, neg_grad


class _RankSort(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, delta_rs: float):
        grad = torch.zeros_like(logits)
        is_pos = targets > 0
        pos_logits, pos_targets = logits[is_pos], targets[is_pos]
        num_pos = pos_logits.shape[0]
        if num_pos == 0:
            ctx.save_for_backward(grad)
            zero = logits.new_zeros(())
            return zero, zero.clone()
        threshold = pos_logits.min() - delta_rs
        is_neg = (targets == 0) & (logits >= threshold)
        ranking, sorting, pos_grad, neg_grad = _errors_and_grads(
            pos_logits.detach(), pos_targets.detach(), logits[is_neg].detach(), delta_rs)
        grad[is_pos] = pos_grad / num_pos
        grad[is_neg] = neg_grad / num_pos
        ctx.save_for_backward(grad)
        return ranking.mean(), sorting.mean()

    @staticmethod
    def backward(ctx, grad_ranking: Tensor, grad_sorting: Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_ranking, None, None


def rank_sort_loss(logits: Tensor, targets: Tensor, delta_rs: float = 0.5) -> tuple[Tensor, Tensor]:
    """(ranking loss, sorting loss) of 1-D `logits` against 1-D `targets` (see the module docstring)."""
    if logits.dim() != 1 or targets.shape != logits.shape:
        raise ValueError(f"logits and targets must be 1-D of the same length, got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    if delta_rs < 0:
        raise ValueError(f"delta_rs must be >= 0, got {delta_rs}")
    return _RankSort.apply(logits, targets.to(logits.dtype), float(delta_rs))
