"""Fast NMS (YOLACT, batched over images and classes) and standard greedy NMS for comparison.

Fast NMS, per image and class: take the `top_k` highest scores, compute their pairwise IoU, keep the
upper triangle (IoU with higher-scored boxes only) and drop a box whose largest IoU with any
higher-scored box exceeds `iou_thr`, whether or not that box was itself dropped. Hence Fast NMS keeps a
subset of what greedy NMS keeps, and the same set when no two candidates overlap above the threshold.
Then (mmdet) only scores > `score_thr` stay, and the best `max_det` over all classes are returned.

Both return, per image, `(index [N] into the candidates, class [N] 0..C-1, score [N])`, score-sorted.
"""
from __future__ import annotations

import torch

from model.box_coding import box_iou


def fast_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thr: float = 0.5, top_k: int = 200,
             score_thr: float = 0.05, max_det: int = 100) -> list[tuple[torch.Tensor, ...]]:
    """boxes [B, N, 4], scores [B, N, C] (foreground classes only)."""
    B, N, C = scores.shape
    top_scores, top_idx = scores.transpose(1, 2).topk(min(top_k, N), dim=2)  # [B, C, k], sorted descending
    # A box at or below score_thr is never kept and only suppresses lower-scored boxes, which are below
    # the threshold too: cutting every list after its last box above the threshold changes nothing.
    k = int((top_scores > score_thr).sum(dim=2).max()) if top_scores.numel() else 0
    top_scores, top_idx = top_scores[..., :k], top_idx[..., :k]  # [B, C, k]
    cand = boxes.gather(1, top_idx.reshape(B, C * k, 1).expand(-1, -1, 4)).view(B, C, k, 4)  # [B, C, k, 4]
    iou = box_iou(cand, cand).triu(diagonal=1)  # [B, C, k, k]: row i = higher-scored box i
    keep = (iou.amax(dim=2) <= iou_thr) & (top_scores > score_thr) if k else top_scores > score_thr  # [B, C, k]
    results = []
    classes = torch.arange(C, device=scores.device)[:, None].expand(C, k)  # [C, k]
    for b in range(B):
        s, order = top_scores[b][keep[b]].sort(descending=True)
        results.append((top_idx[b][keep[b]][order][:max_det], classes[keep[b]][order][:max_det], s[:max_det]))
    return results


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thr: float = 0.5) -> torch.Tensor:
    """Greedy NMS of one class: boxes [N, 4], scores [N] -> kept indices [K], score-sorted."""
    order = scores.argsort(descending=True)
    suppress = (box_iou(boxes[order], boxes[order]) > iou_thr).cpu()  # [N, N]
    keep = torch.ones(order.numel(), dtype=torch.bool)
    for i in range(order.numel()):
        if keep[i]:
            keep[i + 1:] &= ~suppress[i, i + 1:]
    return order[keep.to(order.device)]


def standard_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thr: float = 0.5, top_k: int | None = None,
                 score_thr: float = 0.05, max_det: int = 100) -> list[tuple[torch.Tensor, ...]]:
    """Greedy NMS per image and class over scores > `score_thr` (optionally only each class's `top_k`)."""
    B, N, C = scores.shape
    results = []
    for b in range(B):
        idx, cls, sc = [], [], []
        for c in range(C):
            s = scores[b, :, c]
            cand = (s > score_thr).nonzero().squeeze(1)
            if top_k is not None and cand.numel() > top_k:
                cand = cand[s[cand].topk(top_k).indices]
            kept = cand[nms(boxes[b, cand], s[cand], iou_thr)]
            idx.append(kept)
            cls.append(torch.full_like(kept, c))
            sc.append(s[kept])
        s_all, order = torch.cat(sc).sort(descending=True)
        results.append((torch.cat(idx)[order][:max_det], torch.cat(cls)[order][:max_det], s_all[:max_det]))
    return results
