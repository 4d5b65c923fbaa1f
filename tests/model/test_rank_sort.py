"""Rank & Sort Loss against a slow, literal per-positive reference: losses and the gradient."""
import pytest
import torch

from model import rank_sort_loss


def _step(x, delta):
    return (x / (2 * delta) + 0.5).clamp(0, 1) if delta > 0 else (x >= 0).double()


def reference(logits, targets, delta=0.5, eps=1e-10):
    """One positive at a time, in ascending logit order, as the official loop goes."""
    logits, targets = logits.double(), targets.double()
    grad = torch.zeros_like(logits)
    pos = targets > 0
    if not pos.any():
        return 0.0, 0.0, grad
    s, t = logits[pos], targets[pos]
    neg = (targets == 0) & (logits >= s.min() - delta)
    n = logits[neg]
    P = len(s)
    ranking, sorting = torch.zeros(P, dtype=torch.float64), torch.zeros(P, dtype=torch.float64)
    g_pos, g_neg = torch.zeros(P, dtype=torch.float64), torch.zeros(len(n), dtype=torch.float64)
    for i in torch.argsort(s).tolist():
        fg = torch.stack([_step(s[j] - s[i], delta) for j in range(P)])
        bg = torch.stack([_step(n[k] - s[i], delta) for k in range(len(n))]) if len(n) else torch.zeros(0, dtype=torch.float64)
        rank_pos, fp = fg.sum(), bg.sum()
        ranking[i] = fp / (rank_pos + fp)
        current = sum(fg[j] * (1 - t[j]) for j in range(P)) / rank_pos
        above = [bool(t[j] >= t[i]) for j in range(P)]
        tgt = sum(fg[j] * (1 - t[j]) for j in range(P) if above[j]) / sum(fg[j] for j in range(P) if above[j])
        sorting[i] = current - tgt
        if fp > eps:
            g_pos[i] -= ranking[i]
            g_neg += bg * ranking[i] / fp
        miss = torch.stack([fg[j] * (not above[j]) for j in range(P)])
        if miss.sum() > eps:
            g_pos[i] -= sorting[i]
            g_pos += miss * sorting[i] / miss.sum()
    grad[pos], grad[neg] = g_pos / P, g_neg / P
    return float(ranking.mean()), float(sorting.mean()), grad


def _check(logits, targets, delta=0.5):
    x = logits.clone().requires_grad_(True)
    r, s = rank_sort_loss(x, targets, delta)
    (r + s).backward()
    ref_r, ref_s, ref_g = reference(logits, targets, delta)
    assert float(r) == pytest.approx(ref_r, abs=1e-6) and float(s) == pytest.approx(ref_s, abs=1e-6)
    torch.testing.assert_close(x.grad.double(), ref_g, atol=1e-6, rtol=1e-5)
    return float(r), float(s), x.grad


def test_hand_case_one_positive_one_negative_at_equal_scores():
    # H(0) = 0.5 for the positive itself and for the negative: ranking error 0.5 / 1, no sorting
    r, s, g = _check(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert (r, s) == (0.5, 0.0)
    assert g.tolist() == [-0.5, 0.5]  # the positive is pushed up by its error, the negative down


def test_hand_case_missorted_positives():
    # two positives far apart (H = 0 or 1), no negatives: the better-localised one (t = 0.9) scores
    # lower, so it has a sorting error and the other positive takes the blame
    r, s, g = _check(torch.tensor([0.0, 5.0]), torch.tensor([0.9, 0.5]))
    # positive 0: current (0.5·0.1 + 1·0.5) / 1.5 = 0.3667, target (0.5·0.1) / 0.5 = 0.1 -> 0.2667
    # positive 1: current (0.5·0.5) / 0.5 = 0.5, target: same set -> 0; ranking errors 0
    assert r == 0.0 and s == pytest.approx((0.55 / 1.5 - 0.1) / 2)
    assert g[0] == pytest.approx(-(0.55 / 1.5 - 0.1) / 2) and g[1] == pytest.approx((0.55 / 1.5 - 0.1) / 2)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("delta", [0.5, 0.25, 0.0])
def test_random_cases_with_ties_and_ignored_entries(seed, delta):
    gen = torch.Generator().manual_seed(seed)
    n = 60
    logits = (torch.randn(n, generator=gen) * 1.5).round(decimals=1)  # rounding makes ties
    kind = torch.rand(n, generator=gen)
    targets = torch.where(kind < 0.25, torch.rand(n, generator=gen).round(decimals=1).clamp(min=0.1),
                          torch.where(kind < 0.9, torch.zeros(n), -torch.ones(n)))
    _check(logits, targets, delta)


def test_single_positive_and_chunking(monkeypatch):
    _check(torch.tensor([0.3, 1.0, -2.0, 0.2]), torch.tensor([0.0, 0.7, 0.0, -1.0]))
    import model.rank_sort as RS
    gen = torch.Generator().manual_seed(3)
    logits, targets = torch.randn(40, generator=gen), (torch.rand(40, generator=gen) - 0.6).clamp(min=0)
    whole = _check(logits, targets)
    monkeypatch.setattr(RS, "CHUNK_ELEMENTS", 50)  # one positive per chunk
    chunked = _check(logits, targets)
    assert whole[:2] == pytest.approx(chunked[:2]) and torch.allclose(whole[2], chunked[2])


def test_no_positives_gives_zero_losses_and_zero_gradient():
    x = torch.randn(10, requires_grad=True)
    r, s = rank_sort_loss(x, torch.zeros(10))
    (r + s).backward()
    assert float(r) == 0.0 and float(s) == 0.0 and torch.equal(x.grad, torch.zeros(10))
    with pytest.raises(ValueError, match="1-D"):
        rank_sort_loss(torch.zeros(2, 2), torch.zeros(2, 2))
