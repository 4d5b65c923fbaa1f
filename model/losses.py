"""YOLACT training losses (docs/design.md §8, mmdetection YOLACT as the maIoU configs run it).

`losses(out, targets, matched, weights)` takes the model output (`model.yolact`), the batch
targets (per image `boxes` [G,4] in input pixels, `labels` [G] int64 0..C-1, `masks` bool [G,S,S])
and one assignment per image (`LongTensor[A]`: GT index ≥ 0, `background`, `ignore`), and returns
weighted loss tensors:
- `loss_cls`: softmax CE (background = class 0) over positives and OHEM negatives: per image the
  3·#pos negatives with the highest CE; an image without positives uses all its negatives (mmdet
  `loss_single_OHEM`); ignored anchors never count. Divided by N = Σ_img max(#pos, 1).
- `loss_box`: SmoothL1 (β = 1) between predicted and encoded GT deltas over positives, / N.
- `loss_mask`: per positive (at most `max_masks` per image, a random subset), BCE of the assembled
  mask logits against the GT mask resized bilinearly to prototype size and thresholded at 0.5,
  summed inside the GT box (padded by 1 proto pixel) and divided by the GT box area in proto pixels;
  averaged over the masks used (mmdet). With `mask_alignment` (SipMask) each mask's loss is weighted
  by α = p(GT class) × IoU(predicted box, GT box), detached and normalised to mean 1.
- `loss_sem`: BCE-with-logits of the P3 semantic map against the per-class union of the GT masks
  (resized to P3, > 0.5), summed and divided by B·H3·W3. Present when `out` has `sem`.
- `loss_maskiou` (YOLACT++ re-scoring): SmoothL1 between the re-scoring net's IoU at the GT class
  and IoU(predicted mask > 0.5, GT) at proto size, for GT masks over 25 proto pixels; averaged over
  the masks used. The net's input is not detached (official). Present when `out` has `mask_iou_net`.
Outside the GT crop the official loss sees prediction 0: those pixels carry no gradient and are left
out (the loss value differs from mmdet's by that constant only).

The sentinels are plain ints here because `model` never imports `assigners`; their defaults equal
`assigners.BACKGROUND` / `assigners.IGNORE` (a test checks they agree).
Every loss is finite for images without GT (only negatives) and for a batch without positives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.box_coding import box_area, box_iou_aligned, decode, encode
from model.masks import crop_region, mask_logits, resize_masks
from model.rescoring import MIN_GT_AREA

BACKGROUND = -1  # = assigners.BACKGROUND
IGNORE = -2  # = assigners.IGNORE
DEFAULT_LOSS_WEIGHTS = {"loss_cls": 1.0, "loss_box": 1.5, "loss_mask": 6.125, "loss_sem": 1.0,
                        "loss_maskiou": 25.0}


def _weights(weights: dict | None) -> dict[str, float]:
    unknown = set(weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown loss weights {sorted(unknown)}; valid: {sorted(DEFAULT_LOSS_WEIGHTS)}")
    return {**DEFAULT_LOSS_WEIGHTS, **(weights or {})}


def _validate(out: dict, targets: list[dict], matched: torch.Tensor, background: int, ignore: int,
              check_values: bool) -> None:
    """Shapes always (no host sync); label and assignment values only with `check_values`
    (debugging: each reads tensor values back to the host)."""
    B, A, C1 = out["cls"].shape
    if len(targets) != B or len(matched) != B:
        raise ValueError(f"batch of {B} images but {len(targets)} targets and {len(matched)} assignments")
    if matched.shape != (B, A):
        raise ValueError(f"matched has shape {tuple(matched.shape)}, expected ({B}, {A})")
    for b, (t, m) in enumerate(zip(targets, matched)):
        G = t["boxes"].shape[0]
        if t["labels"].shape != (G,) or t["masks"].shape[0] != G:
            raise ValueError(f"targets[{b}]: {G} boxes but labels {tuple(t['labels'].shape)}, "
                             f"masks {tuple(t['masks'].shape)}")
        if not check_values:
            continue
        if G and (int(t["labels"].min()) < 0 or int(t["labels"].max()) >= C1 - 1):
            raise ValueError(f"targets[{b}]['labels'] must lie in 0..{C1 - 2}")
        bad = (m >= G) | ((m < 0) & (m != background) & (m != ignore))
        if bool(bad.any()):
            raise ValueError(f"matched[{b}] holds {m[bad][0].item()}: not a GT index < {G}, "
                             f"background ({background}) or ignore ({ignore})")


def classification_loss(cls: torch.Tensor, target: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
                        neg_pos_ratio: int) -> torch.Tensor:
    """Summed CE over positives and hard negatives: cls [B,A,C+1], target/pos/neg [B,A]."""
    B, A, _ = cls.shape
    ce = F.cross_entropy(cls.flatten(0, 1), target.flatten(), reduction="none").view(B, A)  # [B, A]
    num_pos, num_neg = pos.sum(1), neg.sum(1)  # [B]
    k = torch.where(num_pos > 0, neg_pos_ratio * num_pos, num_neg).minimum(num_neg)  # [B]
    order = ce.detach().masked_fill(~neg, float("-inf")).argsort(dim=1, descending=True)  # [B, A]
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(A, device=cls.device).expand(B, A))
    hard = neg & (rank < k[:, None])  # [B, A]
    return torch.where(pos | hard, ce, torch.zeros_like(ce)).sum()


def semantic_loss(sem: torch.Tensor, targets: list[dict]) -> torch.Tensor:
    """sem [B,C,H,W] logits; target = per-class union of the GT masks at that size.

    An image without GT contributes nothing (mmdet weights it by zero), the divisor stays B·H·W.
    """
    B, C, H, W = sem.shape
    goal = torch.zeros_like(sem)
    has_gt = torch.zeros(B, 1, 1, 1, device=sem.device)
    for b, t in enumerate(targets):
        if t["masks"].shape[0]:
            small = resize_masks(t["masks"], (H, W)).flatten(1).float()  # [G, H*W]
            onehot = F.one_hot(t["labels"], C).T.float()  # [C, G]
            goal[b] = ((onehot @ small) > 0).float().view(C, H, W)
            has_gt[b] = 1.0
    bce = F.binary_cross_entropy_with_logits(sem, goal, reduction="none") * has_gt  # [B, C, H, W]
    return bce.sum() / (B * H * W)


def _maskiou_terms(net, soft: torch.Tensor, gt: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SmoothL1 per mask between the net's IoU at the GT class and IoU(soft > 0.5, gt); soft/gt [n,Hp,Wp]."""
    keep = gt.sum((1, 2)) > MIN_GT_AREA  # [n]
    soft, gt, labels = soft[keep], gt[keep], labels[keep]
    binary = (soft > 0.5).float()
    inter = (binary * gt).sum((1, 2))
    union = (binary + gt).clamp(max=1).sum((1, 2))
    goal = (inter / union.clamp(min=1.0)).detach()  # [n']
    pred = net(soft[:, None]).gather(1, labels[:, None]).squeeze(1)  # [n']
    return F.smooth_l1_loss(pred, goal, beta=1.0, reduction="none")


def mask_losses(out: dict, targets: list[dict], matched: torch.Tensor, max_masks: int, mask_alignment: bool,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mask loss, mask-IoU loss or None), each averaged over the masks used."""
    proto, coef, anchors = out["proto"].float(), out["coef"].float(), out["anchors"].float()
    Hp, Wp = proto.shape[-2:]
    S_h, S_w = out["image_size"]
    scale = proto.new_tensor([Wp / S_w, Hp / S_h, Wp / S_w, Hp / S_h])
    net = out.get("mask_iou_net")
    per_mask, alphas, iou_terms = [], [], []
    for b, t in enumerate(targets):
        idx = (matched[b] >= 0).nonzero().squeeze(1)  # [n] anchor indices
        if idx.numel() > max_masks:
            idx = idx[torch.randperm(idx.numel(), generator=generator)[:max_masks].to(idx.device)]
        g = matched[b, idx]  # [n] GT indices
        gt_boxes = t["boxes"][g].float() * scale  # [n, 4] proto pixels
        logits = mask_logits(proto[b], coef[b, idx], gt_boxes)  # [n, Hp, Wp]
        gt = resize_masks(t["masks"], (Hp, Wp))[g].float()  # [n, Hp, Wp]
        crop = crop_region(gt_boxes, Hp, Wp)  # [n, Hp, Wp]
        bce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none") * crop
        # area floored at 1 proto pixel²: a sub-pixel GT box must not blow the loss up
        per_mask.append(bce.sum((1, 2)) / box_area(gt_boxes).clamp(min=1.0))
        if mask_alignment:
            prob = out["cls"][b, idx].float().softmax(-1).gather(1, (t["labels"][g] + 1)[:, None]).squeeze(1)
            pred_boxes = decode(out["box"][b, idx].float(), anchors[idx])
            alphas.append((prob * box_iou_aligned(pred_boxes, t["boxes"][g].float())).detach())
        if net is not None:
            iou_terms.append(_maskiou_terms(net, logits.sigmoid() * crop, gt, t["labels"][g]))
    # an empty selection still flows through the ops above, so the sums are 0 with a connected graph
    per_mask = torch.cat(per_mask)  # [M]
    if mask_alignment:
        alpha = torch.cat(alphas)
        per_mask = per_mask * alpha / alpha.mean().clamp(min=1e-6) if alpha.numel() else per_mask
    count = max(per_mask.numel(), 1)
    iou_loss = torch.cat(iou_terms).sum() / count if net is not None else None
    return per_mask.sum() / count, iou_loss


def positive_targets(targets: list[dict], m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class targets int64 [B, A] (GT label + 1 at positives, 0 elsewhere) and the positives' GT
    boxes float [P, 4] in (image, anchor) order, the rows of `out["box"][m >= 0]`: one gather
    over the batch's concatenated GTs, no loop over images and no host sync."""
    pos = m >= 0  # [B, A]
    counts = [t["boxes"].shape[0] for t in targets]  # shapes: no host sync
    if not sum(counts):
        return torch.zeros_like(m), m.new_zeros((0, 4), dtype=torch.float32)
    first = torch.cat([m.new_full((1,), sum(counts[:b])) for b in range(len(counts))])  # [B]
    row = (first[:, None] + m).clamp(min=0)  # [B, A] row in the concatenated GTs (junk off positives)
    labels = torch.cat([t["labels"] for t in targets])  # [N]
    boxes = torch.cat([t["boxes"].float() for t in targets])  # [N, 4]
    return torch.where(pos, labels[row] + 1, 0), boxes[row[pos]]


def losses(out: dict, targets: list[dict], matched: torch.Tensor | list[torch.Tensor], weights: dict | None = None, *,
           neg_pos_ratio: int = 3, max_masks: int = 100, mask_alignment: bool = False,
           background: int = BACKGROUND, ignore: int = IGNORE,
           generator: torch.Generator | None = None, check_values: bool = False) -> dict[str, torch.Tensor]:
    """Weighted losses {loss_cls, loss_box, loss_mask[, loss_sem][, loss_maskiou]}; see the module docstring.

    `matched` int64 [B, A] (or one [A] per image); `check_values` also checks label and
    assignment values (host syncs: for debugging)."""
    w = _weights(weights)
    m = matched if isinstance(matched, torch.Tensor) else torch.stack(matched)  # [B, A]
    _validate(out, targets, m, background, ignore, check_values)
    device = out["cls"].device
    with torch.autocast(device_type=device.type, enabled=False):  # losses in fp32 under bf16 autocast
        pos, neg = m >= 0, m == background  # [B, A]
        norm = pos.sum(1).clamp(min=1).sum().float()  # Σ_img max(#pos, 1)
        cls_target, gt_pos = positive_targets(targets, m)  # [B, A], [P, 4]
        anchors = out["anchors"].float()  # [A, 4]
        anchors_pos = anchors.expand(m.shape[0], -1, -1)[pos]  # [P, 4]
        cls = out["cls"].float()
        result = {"loss_cls": w["loss_cls"] * classification_loss(cls, cls_target, pos, neg, neg_pos_ratio) / norm}
        goal = encode(gt_pos, anchors_pos)  # [P, 4]
        box = F.smooth_l1_loss(out["box"].float()[pos], goal, beta=1.0, reduction="sum")
        result["loss_box"] = w["loss_box"] * box / norm
        mask, maskiou = mask_losses(out, targets, m, max_masks, mask_alignment, generator)
        result["loss_mask"] = w["loss_mask"] * mask
        if "sem" in out:
            result["loss_sem"] = w["loss_sem"] * semantic_loss(out["sem"].float(), targets)
        if maskiou is not None:
            result["loss_maskiou"] = w["loss_maskiou"] * maskiou
    return result
