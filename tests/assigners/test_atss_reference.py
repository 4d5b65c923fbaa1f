"""Candidate-only ATSS against a straightforward dense ATSS written here, and ATSS's invariants."""
import math

import pytest
import torch

from assigners import ASSIGNERS, BACKGROUND, MaskIntegrals
from assigners.overlaps import box_diou, box_giou, box_iou, mask_aware_iou, mask_box_iou
from tests.assigners.reference import brute_gmaiou, brute_maiou, random_case

DENSE = {"atss_iou": box_iou, "atss_giou": box_giou, "atss_diou": box_diou,
         "atss_maiou": mask_aware_iou, "atss_gmaiou": mask_box_iou}
MASK_AWARE = {"atss_maiou", "atss_gmaiou"}


def atss_grid(size):
    """The ATSS anchors of a size×size image: strides 8..128, one square anchor of 4·stride per
    cell, centred at the cell corner (j·s, i·s); row-major per level -> ([A, 4], per-level counts)."""
    boxes, counts = [], []
    for s in (8, 16, 32, 64, 128):
        n = math.ceil(size / s)
        ys, xs = torch.meshgrid(torch.arange(n) * s, torch.arange(n) * s, indexing="ij")
        c = torch.stack([xs.flatten(), ys.flatten()], 1).float()  # [n², 2]
        boxes.append(torch.cat([c - 2 * s, c + 2 * s], 1))  # [n², 4]
        counts.append(n * n)
    return torch.cat(boxes), counts


def dense_atss(gt, anchors, counts, overlaps, valid, k=9):
    """ATSS by the book, one GT at a time, from the full overlap matrix [G, A]."""
    g_n, a_n = overlaps.shape
    gc = (gt[:, :2] + gt[:, 2:]) / 2
    ac = (anchors[:, :2] + anchors[:, 2:]) / 2
    dist = (ac[None] - gc[:, None]).pow(2).sum(-1).sqrt()  # [G, A], float32 as the official code
    positive = torch.zeros((g_n, a_n), dtype=torch.bool)
    for g in range(g_n):
        cand, start = [], 0
        for n in counts:
            level = sorted(range(start, start + n), key=lambda a: (dist[g, a].item(), a))
            cand += level[:min(k, n)]
            start += n
        if len(cand) < 2 or not valid[g]:
            continue
        ov = overlaps[g, cand]
        thr = ov.mean() + ov.std()
        for a, o in zip(cand, ov.tolist()):
            cx, cy = ac[a].tolist()
            x1, y1, x2, y2 = gt[g].tolist()
            inside = min(cx - x1, cy - y1, x2 - cx, y2 - cy) > 0.01
            positive[g, a] = o >= thr and inside
    out = torch.full((a_n,), BACKGROUND, dtype=torch.int64)
    for a in range(a_n):
        best = None
        for g in range(g_n):  # strictly greater: the lowest GT index keeps a tie
            if positive[g, a] and (best is None or overlaps[g, a] > overlaps[best, a]):
                best = g
        if best is not None:
            out[a] = best
    return out


def _scene(seed, size, g):
    gen = torch.Generator().manual_seed(seed)
    gt, masks, _ = random_case(gen, size, size, g=g, a=1, integer=seed % 2 == 0, spill=seed % 3 == 0)
    if seed % 4 == 1:  # boxes centred on cell mid-points of the stride-8 and stride-16 grids: ties
        gt[0] = torch.tensor([0.0, 0, 8, 8]) + 16 * (seed % 3)
        gt[1] = torch.tensor([4.0, 4, 28, 28])
    if seed % 5 == 2:
        gt[-1] = gt[0]  # identical GTs
        masks[-1] = masks[0]
    if seed % 3 == 1:
        masks[1] = False  # an empty mask
    return gt, masks


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", list(DENSE))
def test_candidate_only_equals_dense(name, seed, size, device):
    gt, masks = _scene(seed, size, g=5)
    anchors, counts = atss_grid(size)
    integral = MaskIntegrals.from_masks(masks)
    if name in MASK_AWARE:
        overlaps = DENSE[name](gt, anchors, integral)
        valid = masks.flatten(1).any(1)
    else:
        overlaps, valid = DENSE[name](gt, anchors), torch.ones(gt.shape[0], dtype=torch.bool)
    expect = dense_atss(gt, anchors, counts, overlaps, valid)
    got = ASSIGNERS[name](gt.to(device), masks.to(device), anchors.to(device), counts, integral=integral.to(device))
    assert got.device.type == device.type
    assert torch.equal(got.cpu(), expect)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name, brute", [("atss_maiou", brute_maiou), ("atss_gmaiou", brute_gmaiou)])
def test_small_image_levels_against_brute_force(name, brute, seed, device):
    """64×64: levels of 64, 16, 4, 1 and 1 anchors, so three take all of theirs (fewer than 9).
    The overlaps come from rasterising every anchor (no integral image) and the assignment from
    the dense ATSS above: the whole mask-aware path against the slow references."""
    gt, masks = _scene(seed, 64, g=5)
    anchors, counts = atss_grid(64)
    assert counts == [64, 16, 4, 1, 1]
    expect = dense_atss(gt, anchors, counts, brute(gt, masks, anchors), masks.flatten(1).any(1))
    got = ASSIGNERS[name](gt.to(device), masks.to(device), anchors.to(device), counts)
    assert torch.equal(got.cpu(), expect)
    assert (expect >= 0).any()  # the case is not vacuous


@pytest.mark.parametrize("name", list(DENSE))
def test_atss_invariants(name, device):
    """Positives: centre inside their GT box, overlap >= that GT's candidates' mean + std."""
    from assigners.atss import atss_candidates
    size = 128
    anchors, counts = atss_grid(size)
    for seed in range(4):
        gt, masks = _scene(seed, size, g=6)
        gt, masks, anc = gt.to(device), masks.to(device), anchors.to(device)
        integral = MaskIntegrals.from_masks(masks)
        out = ASSIGNERS[name](gt, masks, anc, counts, integral=integral)
        assert out.device == anc.device
        overlaps = DENSE[name](gt, anc, integral) if name in MASK_AWARE else DENSE[name](gt, anc)
        cand = atss_candidates(gt, anc, counts)  # [G, C]
        thr = torch.stack([overlaps[g, cand[g]] for g in range(gt.shape[0])])  # [G, C]
        thr = thr.mean(1) + thr.std(1)  # [G]
        pos = torch.nonzero(out >= 0).flatten()
        g = out[pos]
        c = (anc[pos, :2] + anc[pos, 2:]) / 2
        assert ((c > gt[g, :2] + 0.01) & (c < gt[g, 2:] - 0.01)).all()
        assert (overlaps[g, pos] >= thr[g]).all()
        assert all(bool((cand[gi] == p).any()) for gi, p in zip(g.tolist(), pos.tolist()))
        assert ((out >= 0) | (out == BACKGROUND)).all()
