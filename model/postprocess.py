"""Detections in original-image coordinates from the raw model output (docs/design.md §8 inference, mmdet test cfg).

Steps, batched over images where the shapes allow:
1. class probabilities = softmax(cls) without background (sigmoid(cls) for a sigmoid head); per
   level, the `nms_pre` anchors with the highest foreground score are candidates (mmdet `nms_pre`
   is per level);
2. decode their boxes and clip them to the S×S input; Fast NMS per class (IoU `nms_iou`, `nms_top_k`
   per class), keep scores > `score_thr`, the best `max_per_img` overall (or greedy NMS with
   `fast_nms=False`);
3. masks: sigmoid(P·c) at prototype resolution, cropped by the predicted box (padded by 1 proto
   pixel), bilinearly resized to the original (h, w), thresholded at `mask_thr` — the resize of
   the whole image, evaluated only inside each mask's window (`model.paste`);
4. boxes scaled from the S×S input to (h, w) and clamped to the image.
With a re-scoring net (YOLACT++) `mask_scores` = class score × predicted mask IoU; otherwise it
equals `scores`.

Output per image: dict(boxes float32 [N,4] xyxy original pixels, scores [N], labels int64 [N]
(contiguous 0..C-1), masks bool [N,h,w], mask_scores [N]).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from model.box_coding import decode
from model.masks import CROP_PADDING, crop_region, mask_logits
from model.nms import fast_nms, standard_nms
from model.paste import crop_bounds, paste_masks


@runtime_checkable
class PostprocessParams(Protocol):
    """The parameters `postprocess` reads, by attribute. Their values (the official test config's)
    are written once, as the defaults of `pipeline.config.EvalConfig`, which is passed as is."""
    score_thr: float  # keep detections scoring above this
    nms_pre: int  # candidates per pyramid level, by best class score
    nms_iou: float  # NMS IoU threshold
    nms_top_k: int  # detections per class kept by Fast NMS
    max_per_img: int  # detections per image
    mask_thr: float  # binarisation threshold of the sigmoid masks
    fast_nms: bool  # YOLACT's Fast NMS, else greedy NMS


def _candidates(scores: torch.Tensor, counts: list[int], nms_pre: int) -> torch.Tensor:
    """Per level, the indices of the `nms_pre` anchors with the highest max score: [B, N]."""
    best = scores.amax(dim=2)  # [B, A]
    picks, start = [], 0
    for n in counts:
        k = min(nms_pre, n)
        picks.append(best[:, start:start + n].topk(k, dim=1).indices + start)  # [B, k]
        start += n
    return torch.cat(picks, dim=1)


def _masks(proto: torch.Tensor, coef: torch.Tensor, boxes: torch.Tensor, scale: torch.Tensor,
           size: tuple[int, int], mask_thr: float, net, labels: torch.Tensor):
    """Binary masks [N, h, w] at the original size and the predicted mask IoU [N] (or None)."""
    Hp, Wp = proto.shape[-2:]
    pboxes = boxes * scale  # [N, 4] proto pixels
    soft = mask_logits(proto, coef, pboxes).sigmoid() * crop_region(pboxes, Hp, Wp)  # [N, Hp, Wp]
    iou = None
    if net is not None:
        iou = net(soft[:, None]).gather(1, labels[:, None]).squeeze(1) if soft.shape[0] else soft.new_zeros(0)
    return paste_masks(soft, crop_bounds(pboxes, Hp, Wp, CROP_PADDING), size, mask_thr), iou


@torch.no_grad()
def postprocess(out: dict, orig_sizes: list[tuple[int, int]], p: PostprocessParams) -> list[dict]:
    """Per-image detections (see the module docstring) with the parameters `p`."""
    B = out["cls"].shape[0]
    if len(orig_sizes) != B:
        raise ValueError(f"orig_sizes has {len(orig_sizes)} entries for a batch of {B}")
    cls = out["cls"].float()
    scores = cls.sigmoid() if out.get("cls_sigmoid") else cls.softmax(dim=-1)[..., 1:]  # [B, A, C]
    cand = _candidates(scores, out["num_anchors_per_level"], p.nms_pre)  # [B, N]
    C = scores.shape[-1]
    cand_scores = scores.gather(1, cand[..., None].expand(-1, -1, C))  # [B, N, C]
    deltas = out["box"].float().gather(1, cand[..., None].expand(-1, -1, 4))  # [B, N, 4]
    S_h, S_w = out["image_size"]
    boxes = decode(deltas, out["anchors"].float()[cand])  # [B, N, 4] input pixels
    limit = boxes.new_tensor([S_w, S_h, S_w, S_h])
    boxes = torch.minimum(boxes.clamp(min=0), limit)  # clipped to the input before NMS (mmdet max_shape)
    nms_fn = fast_nms if p.fast_nms else standard_nms
    kept = nms_fn(boxes, cand_scores, p.nms_iou, p.nms_top_k, p.score_thr, p.max_per_img)
    proto = out["proto"].float()
    Hp, Wp = proto.shape[-2:]
    to_proto = proto.new_tensor([Wp / S_w, Hp / S_h, Wp / S_w, Hp / S_h])
    results = []
    for b, ((idx, labels, sc), (h, w)) in enumerate(zip(kept, orig_sizes)):
        anchor_idx = cand[b, idx]  # [N]
        coef = out["coef"][b, anchor_idx].float()
        masks, iou = _masks(proto[b], coef, boxes[b, idx], to_proto, (int(h), int(w)), p.mask_thr,
                            out.get("mask_iou_net"), labels)
        to_orig = proto.new_tensor([w / S_w, h / S_h, w / S_w, h / S_h])
        bx = boxes[b, idx] * to_orig
        bx = torch.stack((bx[:, 0].clamp(0, w), bx[:, 1].clamp(0, h), bx[:, 2].clamp(0, w), bx[:, 3].clamp(0, h)), 1)
        results.append({"boxes": bx, "scores": sc, "labels": labels.long(), "masks": masks,
                        "mask_scores": sc * iou if iou is not None else sc.clone()})
    return results
