"""Optimal LRP (oLRP), the LRP-Error (TPAMI 2022) definition, for `segm` and `bbox` (docs/design.md §10).

Matching is pycocotools' own: this module reads the per-image results of a `COCOeval` that has
run `.evaluate()` (greedy COCO matching at `iouThrs[0]` = 0.5, area "all", the top
`maxDets[-1]` = 100 detections per image and class) and never re-matches. It imports numpy only.

Per class with N_GT > 0 non-crowd ground truths:
1. Pool the class's kept detections of all images in image-id order and stable-sort them by
   −score, so the ranking is score, then image id, then the order inside the image (the order of
   the results list; COCOeval sorts each image stably).
2. Each detection is a TP (matched a non-crowd GT, IoU ≥ 0.5: mask IoU for segm, box IoU for
   bbox), an FP (unmatched), or ignored (matched a crowd GT: neither; it repeats the previous
   cut's value, so it never changes the minimum).
3. At every rank cut k = 1..n:
   LRP_k = (Σ_TP (1 − IoU)/(1 − τ) + N_FP + N_FN) / (N_TP + N_FP + N_FN),  τ = 0.5.
4. oLRP = min_k LRP_k; the first (highest-score) cut wins ties. Values within `TIE_TOL` count as
   ties, so that sums equal in exact arithmetic are not split by float rounding.
5. Components at that cut: loc = mean(1 − IoU) over its TPs (NOT divided by 1 − τ), FP =
   N_FP/(N_TP + N_FP) = 1 − precision, FN = N_FN/N_GT = 1 − recall.

Edge cases, as the official code (kemaloksuz/LRP-Error, `accumulate`/`summarize`) has them:
- no detections, or no TP anywhere: oLRP 1, FN 1, loc and FP undefined (None);
- TPs exist but every cut scores 1 (e.g. the only TP has IoU exactly 0.5 and sits behind an FP):
  the first cut wins, it holds no TP: oLRP 1, FN 1, FP 1, loc undefined;
- no non-crowd GT (only crowd GT, or no GT at all): the class is left out of everything, and its
  detections cost nothing.
moLRP and its components are means over the classes where each value is defined, so moLRP and
moLRP_FN average over every class with GT while moLRP_loc and moLRP_FP may average over fewer.
A mean over no class is `UNDEFINED` (-1, pycocotools' convention), never NaN. Means are ×100.

Quirk kept from pycocotools: `dtMatches` stores the matched GT's annotation id with 0 meaning
"unmatched", so a match to a GT whose id is 0 would count as an FP. `pipeline.eval.coco_eval` refuses
ground truth with annotation id 0 for that reason.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TAU = 0.5  # the IoU threshold of LRP-Error; also pycocotools' iouThrs[0]
MAX_DETS = 100  # detections per image and class (COCO)
AREA_ALL = "all"
TIE_TOL = 1e-12  # LRP values closer than this are a tie: the first (highest-score) cut wins
UNDEFINED = -1.0  # a mean over no class (pycocotools reports -1 for undefined metrics)
UNMATCHED = 0  # pycocotools' dtMatches value for "no GT"
COMPONENTS = ("oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN")


@dataclass(frozen=True)
class ClassLRP:
    """oLRP of one class and its components at the optimal cut (fractions, not ×100)."""

    olrp: float
    loc: float | None  # None: no TP at the optimal cut
    fp: float | None  # None: no TP anywhere, or the optimal cut holds no TP and no FP
    fn: float
    num_gt: int
    num_tp: int = 0  # at the optimal cut
    num_fp: int = 0
    threshold: float | None = None  # score of the last detection kept at the optimal cut


@dataclass(frozen=True)
class RankedDetections:
    """One class's detections over the dataset in rank order, with their match outcome."""

    scores: np.ndarray  # float64 [D]
    is_tp: np.ndarray  # bool [D]
    is_fp: np.ndarray  # bool [D]; neither TP nor FP = ignored (matched a crowd GT)
    iou: np.ndarray  # float64 [D], the IoU of the match for TPs, 0 elsewhere
    num_gt: int  # non-crowd GTs of the class


def optimal_lrp(ranked: RankedDetections, tau: float = TAU) -> ClassLRP | None:
    """oLRP of one class from its ranked detections; None when the class has no non-crowd GT."""
    if ranked.num_gt == 0:
        return None
    is_tp = ranked.is_tp.astype(bool)
    if not is_tp.any():
        return ClassLRP(olrp=1.0, loc=None, fp=None, fn=1.0, num_gt=ranked.num_gt)
    num_tp = np.cumsum(is_tp)  # [D], at each cut k = index + 1
    num_fp = np.cumsum(ranked.is_fp.astype(bool))  # [D]
    num_fn = ranked.num_gt - num_tp  # [D]
    total_loc = np.cumsum(np.where(is_tp, 1.0 - ranked.iou, 0.0))  # [D], Σ_TP (1 − IoU)
    lrp = (total_loc / (1.0 - tau) + num_fp + num_fn) / (num_tp + num_fp + num_fn)  # [D]
    cut = int(np.flatnonzero(lrp <= lrp.min() + TIE_TOL)[0])
    tp, fp, fn = int(num_tp[cut]), int(num_fp[cut]), int(num_fn[cut])
    return ClassLRP(
        olrp=float(lrp[cut]),
        loc=float(total_loc[cut] / tp) if tp > 0 else None,
        fp=fp / (tp + fp) if tp + fp > 0 else None,
        fn=fn / ranked.num_gt,
        num_gt=ranked.num_gt, num_tp=tp, num_fp=fp,
        threshold=float(ranked.scores[cut]),
    )


def _check_params(coco_eval) -> tuple[int, int]:
    """The area-"all" index and the number of area ranges; a clear error for unusual params."""
    p = coco_eval.params
    if not isinstance(getattr(coco_eval, "evalImgs", None), list):  # a list once evaluate() ran
        raise ValueError("coco_eval: run COCOeval.evaluate() before computing oLRP")
    if not np.isclose(float(p.iouThrs[0]), TAU):
        raise ValueError(f"coco_eval.params.iouThrs[0] is {p.iouThrs[0]}, oLRP needs {TAU}")
    if int(p.maxDets[-1]) != MAX_DETS:
        raise ValueError(f"coco_eval.params.maxDets[-1] is {p.maxDets[-1]}, oLRP needs {MAX_DETS}")
    if not p.useCats:
        raise ValueError("coco_eval.params.useCats is 0; oLRP is per class")
    if AREA_ALL not in p.areaRngLbl:
        raise ValueError(f"coco_eval.params.areaRngLbl {p.areaRngLbl} has no {AREA_ALL!r} range")
    return p.areaRngLbl.index(AREA_ALL), len(p.areaRng)


def match_ious(coco_eval, img_id: int, cat_id: int, matched: np.ndarray, tp: np.ndarray) -> np.ndarray:
    """The IoU of each TP detection of one image and class with the GT it matched [D], 0 elsewhere."""
    iou = np.zeros(len(matched))
    if tp.any():
        # COCOeval keeps the IoU matrix [D, G]: rows are this image's detections in the same
        # stable score order as evalImgs, columns the GTs in `_gts` order.
        column = {g["id"]: j for j, g in enumerate(coco_eval._gts[img_id, cat_id])}
        matrix = np.asarray(coco_eval.ious[img_id, cat_id])
        for d in np.flatnonzero(tp):
            iou[d] = matrix[d, column[int(matched[d])]]
    return iou


def ranked_detections(coco_eval, cat_id: int) -> RankedDetections:
    """Pool one class's per-image COCOeval results (area all, 100 dets) into rank order."""
    area_idx, num_areas = _check_params(coco_eval)
    p = coco_eval.params
    num_imgs = len(p.imgIds)
    first = p.catIds.index(cat_id) * num_areas * num_imgs + area_idx * num_imgs
    scores, is_tp, is_fp, ious, num_gt = [], [], [], [], 0
    for img_id, e in zip(p.imgIds, coco_eval.evalImgs[first:first + num_imgs]):
        if e is None:  # neither GT nor detections in this image
            continue
        num_gt += int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        matched = np.asarray(e["dtMatches"])[0]  # [D] GT ids at IoU 0.5, UNMATCHED = none
        ignored = np.asarray(e["dtIgnore"])[0].astype(bool)  # [D]
        tp = (matched != UNMATCHED) & ~ignored  # [D]
        iou = match_ious(coco_eval, img_id, cat_id, matched, tp)
        scores.append(np.asarray(e["dtScores"], dtype=np.float64))
        is_tp.append(tp)
        is_fp.append((matched == UNMATCHED) & ~ignored)
        ious.append(iou)
    if not scores:
        empty = np.zeros(0)
        return RankedDetections(empty, empty.astype(bool), empty.astype(bool), empty, num_gt)
    scores_all = np.concatenate(scores)  # [D] in image-id order, then in-image order
    order = np.argsort(-scores_all, kind="mergesort")  # stable: ties keep image and list order
    return RankedDetections(scores_all[order], np.concatenate(is_tp)[order],
                            np.concatenate(is_fp)[order], np.concatenate(ious)[order], num_gt)


def olrp_per_class(coco_eval, tau: float = TAU) -> dict[int, ClassLRP]:
    """oLRP of every category with non-crowd GT, keyed by the original category id."""
    out = {}
    for cat_id in coco_eval.params.catIds:
        result = optimal_lrp(ranked_detections(coco_eval, cat_id), tau)
        if result is not None:
            out[int(cat_id)] = result
    return out


def summarize_olrp(per_class: dict[int, ClassLRP], prefix: str) -> dict[str, float]:
    """moLRP and its components ×100, each averaged over the classes where it is defined."""
    values = {
        "oLRP": [c.olrp for c in per_class.values()],
        "oLRP_loc": [c.loc for c in per_class.values() if c.loc is not None],
        "oLRP_FP": [c.fp for c in per_class.values() if c.fp is not None],
        "oLRP_FN": [c.fn for c in per_class.values()],
    }
    return {f"{prefix}/{name}": 100.0 * float(np.mean(v)) if v else UNDEFINED
            for name, v in values.items()}
