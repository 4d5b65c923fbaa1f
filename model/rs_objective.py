"""The RS-YOLACT training objective (Oksuz et al., ICCV 2021; official kemaloksuz/RankSortLoss,
`RankSortYOLACT` + `RankSortYOLACTHead` + `RankSortYOLACTProtonet`), selected by `train.loss = "rank_sort"`.

`rank_sort_objective(out, targets, matched, weights)` needs a sigmoid class head (`out["cls"]`
[B, A, C], `out["cls_sigmoid"]`) and returns {loss_rank, loss_sort, loss_box, loss_mask[, loss_sem]}:
1. RS Loss (`model.rank_sort`) over every class logit of the batch flattened to [B·A·C], with
   one-hot targets: a positive anchor's entry at its GT class is the IoU of its decoded predicted
   box (detached) with its GT box (an IoU of 0 makes it a negative, as officially), its other
   entries 0; negatives 0 everywhere; ignored anchors −1 everywhere (left out).
2. Box: GIoU loss (1 − GIoU) of the decoded predicted boxes with the GT boxes, each positive
   weighted by its largest class probability (detached), Σ w·(1 − GIoU) / Σ w.
3. Mask: 1 − Σ w·dice / Σ w, dice = 2 Σ m·g / (Σ m² + Σ g² + 1e-5) between the sigmoid mask
   cropped by the GT box (padded by 1 prototype pixel) and the GT mask at prototype size (> 0.5),
   over every positive (the official head takes them all), the same weights w.
4. Self-balancing: box and mask losses are each multiplied by (ranking + sorting) / (their own
   value), both detached — each then equals the RS value while keeping its own gradient direction.
5. Semantic head: `weights["loss_sem"]` × `model.losses.semantic_loss`. The official RS-YOLACT has
   no semantic head; the GmaIoU paper trains one with a weight its text does not give (the
   `gmayolact` preset keeps YOLACT's 1).
The ranking and sorting weights are 1 (official); `loss_cls`, `loss_box` and `loss_mask` weights,
OHEM, the mask cap, SipMask's mask-alignment weighting and the YOLACT++ re-scoring loss are not
used by this objective. Without positives every loss is 0 (and finite).
"""
from __future__ import annotations

import torch
from torch import Tensor

from model.box_coding import box_iou_aligned, decode
from model.losses import IGNORE, semantic_loss
from model.masks import crop_region, mask_logits, resize_masks
from model.rank_sort import rank_sort_loss

DICE_EPS = 1e-5  # official
GIOU_EPS = 1e-6  # mmdet bbox_overlaps


def giou_aligned(a: Tensor, b: Tensor, eps: float = GIOU_EPS) -> Tensor:
    """GIoU of corresponding rows: a, b [N, 4] -> [N] (mmdet's `bbox_overlaps(mode='giou')`)."""
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])  # [N, 2] each
    inter = (rb - lt).clamp(min=0).prod(1)  # [N]
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = (area(a) + area(b) - inter).clamp(min=eps)
    enclose = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(1)
    return inter / union - (enclose.clamp(min=eps) - union) / enclose.clamp(min=eps)


def _dice(out: dict, targets: list[dict], matched: Tensor) -> Tensor:
    """Per positive (anchor order, image by image) the dice of its cropped sigmoid mask: [P]."""
    proto, coef = out["proto"].float(), out["coef"].float()
    Hp, Wp = proto.shape[-2:]
    S_h, S_w = out["image_size"]
    scale = proto.new_tensor([Wp / S_w, Hp / S_h, Wp / S_w, Hp / S_h])
    dice = []
    for b, t in enumerate(targets):
        idx = (matched[b] >= 0).nonzero().squeeze(1)  # [n]
        g = matched[b, idx]  # [n]
        boxes = t["boxes"][g].float() * scale  # [n, 4] proto pixels
        pred = (mask_logits(proto[b], coef[b, idx], boxes).sigmoid() * crop_region(boxes, Hp, Wp)).flatten(1)
        gt = resize_masks(t["masks"], (Hp, Wp))[g].float().flatten(1)  # [n, Hp*Wp]
        dice.append(2 * (pred * gt).sum(1) / ((pred ** 2).sum(1) + (gt ** 2).sum(1) + DICE_EPS))
    return torch.cat(dice)


def _balanced(loss: Tensor, rs: Tensor) -> Tensor:
    """`loss` rescaled to the value of `rs` (both detached in the factor); 0 stays 0."""
    factor = torch.where(loss.detach() > 0, rs.detach() / loss.detach().clamp(min=1e-12), torch.zeros_like(rs))
    return loss * factor


def rank_sort_objective(out: dict, targets: list[dict], matched: Tensor | list[Tensor], weights: dict | None = None, *,
                        ignore: int = IGNORE, delta_rs: float = 0.5,
                        **_unused) -> dict[str, Tensor]:
    """The RS-YOLACT losses (see the module docstring); extra keyword arguments of `model.losses`
    (OHEM ratio, mask cap, ...) are accepted and not used."""
    if not out.get("cls_sigmoid"):
        raise ValueError("train.loss=rank_sort needs a sigmoid class head: set model.sigmoid_cls=true")
    with torch.autocast(device_type=out["cls"].device.type, enabled=False):
        m = matched if torch.is_tensor(matched) else torch.stack(matched)  # [B, A]
        cls = out["cls"].float()  # [B, A, C]
        pos = m >= 0  # [B, A]
        gt_boxes = torch.cat([t["boxes"][m[b, pos[b]]].float() for b, t in enumerate(targets)])  # [P, 4]
        labels = torch.cat([t["labels"][m[b, pos[b]]] for b, t in enumerate(targets)])  # [P]
        pred_boxes = decode(out["box"].float()[pos], out["anchors"].float().expand(m.shape[0], -1, -1)[pos])  # [P, 4]
        iou = box_iou_aligned(pred_boxes.detach(), gt_boxes)  # [P]
        goal = torch.zeros_like(cls)  # [B, A, C]
        goal[m == ignore] = -1.0
        goal_pos = goal[pos]  # [P, C]
        goal_pos[torch.arange(labels.numel(), device=cls.device), labels] = iou
        goal[pos] = goal_pos
        ranking, sorting = rank_sort_loss(cls.flatten(), goal.flatten(), delta_rs)
        w = cls.detach().sigmoid().amax(-1)[pos]  # [P]
        norm = w.sum().clamp(min=1e-12)
        box = ((1 - giou_aligned(pred_boxes, gt_boxes)) * w).sum() / norm
        mask = torch.where(w.sum() > 0, 1 - (w * _dice(out, targets, m)).sum() / norm, w.sum() * 0)
        rs = ranking + sorting
        result = {"loss_rank": ranking, "loss_sort": sorting, "loss_box": _balanced(box, rs),
                  "loss_mask": _balanced(mask, rs)}
        sem_weight = (weights or {}).get("loss_sem", 0.0)
        if "sem" in out and sem_weight:
            result["loss_sem"] = sem_weight * semantic_loss(out["sem"].float(), targets)
    return result
