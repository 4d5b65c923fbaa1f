"""COCO AP and oLRP of any re-weighting of the validation images, from one COCOeval run.

A report that compares two runs must say how sure the difference is, and the validation images
are a sample: resampling them (the bootstrap) and scoring both runs on every resample gives that
uncertainty. Re-running pycocotools per resample would be slow and would need the ground truth
and every run's detections at report time. Instead, once per run, `image_eval(coco_eval)` keeps
what COCOeval's matching decided, per image (area "all", the top 100 detections per image and
class), in a few arrays that travel as one `.npz` artifact (`save` / `load`):

    image_ids   int64 [I]      the evaluated images, in COCOeval's (sorted id) order
    num_gt      int64 [K, I]   non-ignored ground truths per class and image
    det_class   int64 [D]      class index 0..K-1 of each detection
    det_image   int64 [D]      image index 0..I-1 of each detection
    det_score   float64 [D]    its score
    det_tp      bool [T, D]    matched a non-ignored GT at IoU threshold t (COCO's 0.50:0.05:0.95)
    det_fp      bool [T, D]    matched nothing at t (neither: matched an ignored/crowd GT)
    det_iou     float64 [D]    the IoU of its match at t = 0 (IoU 0.5) when a TP there, else 0

Detections of a class are stored in image order, then in COCOeval's in-image order, which is the
order pycocotools pools them in before its stable sort by score.

`ap(ev, weights)` and `olrp(ev, weights)` take image weights [B, I] (how often each image appears
in each of B resamples) and return the metric of every resample [B], ×100. With all weights 1
they equal pycocotools' AP and `pipeline.eval.olrp`'s moLRP exactly; with integer weights they
equal what pycocotools gives on a dataset holding each image that many times (both tested). A
detection of weight w counts w times in the cumulative TP/FP sums and a GT w times in the recall
denominator; copies of one detection are adjacent in the ranking, so the precision envelope and
the LRP minimum are those of the replicated dataset.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.eval.olrp import AREA_ALL, TAU, TIE_TOL, UNDEFINED, UNMATCHED, match_ious

PERCENT = 100.0
# pycocotools' recall thresholds: 0:0.01:1 (101 points)
REC_THRS = np.linspace(0.0, 1.0, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
CHUNK = 64  # resamples scored at once: bounds memory at CHUNK × T × D floats per class


@dataclass(frozen=True)
class ImageEval:
    image_ids: np.ndarray
    num_gt: np.ndarray
    det_class: np.ndarray
    det_image: np.ndarray
    det_score: np.ndarray
    det_tp: np.ndarray
    det_fp: np.ndarray
    det_iou: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.image_ids)


def image_eval(coco_eval) -> ImageEval:
    """The per-image outcome of a COCOeval that has run `.evaluate()` (see the module docstring)."""
    p = coco_eval.params
    area, num_areas = p.areaRngLbl.index(AREA_ALL), len(p.areaRng)
    num_imgs, num_iou = len(p.imgIds), len(p.iouThrs)
    if not np.isclose(float(p.iouThrs[0]), TAU):
        raise ValueError(f"coco_eval.params.iouThrs[0] is {p.iouThrs[0]}, expected {TAU}")
    num_gt = np.zeros((len(p.catIds), num_imgs), dtype=np.int64)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("cls", "img", "score", "tp", "fp", "iou")}
    for k, cat_id in enumerate(p.catIds):
        first = k * num_areas * num_imgs + area * num_imgs
        for i, (img_id, e) in enumerate(zip(p.imgIds, coco_eval.evalImgs[first:first + num_imgs])):
            if e is None:  # neither GT nor detections of this class in this image
                continue
            num_gt[k, i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
            matched = np.asarray(e["dtMatches"]).reshape(num_iou, -1)  # [T, D] GT ids, 0 = none
            ignored = np.asarray(e["dtIgnore"]).reshape(num_iou, -1).astype(bool)  # [T, D]
            if matched.shape[1] == 0:
                continue
            tp, fp = (matched != UNMATCHED) & ~ignored, (matched == UNMATCHED) & ~ignored  # [T, D]
            parts["cls"].append(np.full(matched.shape[1], k))
            parts["img"].append(np.full(matched.shape[1], i))
            parts["score"].append(np.asarray(e["dtScores"], dtype=np.float64))
            parts["tp"].append(tp)
            parts["fp"].append(fp)
            parts["iou"].append(match_ious(coco_eval, img_id, cat_id, matched[0], tp[0]))
    if not parts["score"]:
        empty = np.zeros(0)
        return ImageEval(np.asarray(p.imgIds, dtype=np.int64), num_gt, empty.astype(np.int64),
                         empty.astype(np.int64), empty, np.zeros((num_iou, 0), bool),
                         np.zeros((num_iou, 0), bool), empty)
    return ImageEval(np.asarray(p.imgIds, dtype=np.int64), num_gt,
                     np.concatenate(parts["cls"]).astype(np.int64), np.concatenate(parts["img"]).astype(np.int64),
                     np.concatenate(parts["score"]), np.concatenate(parts["tp"], axis=1),
                     np.concatenate(parts["fp"], axis=1), np.concatenate(parts["iou"]))


def save(evals: dict[str, ImageEval], path: str | Path) -> Path:
    """Several `ImageEval`s (e.g. {"segm": …, "bbox": …}) in one compressed `.npz`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{name}.{field}": value for name, ev in evals.items() for field, value in asdict(ev).items()}
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load(path: str | Path) -> dict[str, ImageEval]:
    with np.load(path) as z:
        names = {key.split(".")[0] for key in z.files}
        return {name: ImageEval(**{f: z[f"{name}.{f}"] for f in ImageEval.__dataclass_fields__})
                for name in sorted(names)}


def _class_order(ev: ImageEval, k: int) -> np.ndarray:
    """Indices of class k's detections in rank order (pycocotools' stable sort by −score)."""
    idx = np.flatnonzero(ev.det_class == k)
    return idx[np.argsort(-ev.det_score[idx], kind="mergesort")]


def _check_weights(ev: ImageEval, weights: np.ndarray) -> np.ndarray:
    """Integer image counts [B, I] (int32: the cumulative sums stay exact, and fast)."""
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != ev.num_images:
        raise ValueError(f"weights must be [B, {ev.num_images}] (one per image), got {weights.shape}")
    counts = np.rint(weights).astype(np.int32)
    if (counts != weights).any() or (counts < 0).any():
        raise ValueError("weights must be counts: non-negative integers (how often each image is drawn)")
    return counts


def _class_mean(ev: ImageEval, weights: np.ndarray, per_class) -> np.ndarray:
    """×100 mean over the classes with ground truth (under each weighting) of
    `per_class(ev, ranked detections, weights [b, I], weighted GT count [b]) -> [b]`; -1 where no
    class has ground truth. Resamples go in chunks of `CHUNK` to bound memory."""
    weights = _check_weights(ev, weights)
    total = np.zeros(len(weights))
    classes = np.zeros(len(weights))
    for k in range(len(ev.num_gt)):
        order = _class_order(ev, k)
        num_gt = (weights @ ev.num_gt[k]).astype(np.float64)  # [B]
        for lo in range(0, len(weights), CHUNK):
            chunk = slice(lo, lo + CHUNK)
            valid = num_gt[chunk] > 0  # a class without GT is left out (pycocotools and oLRP alike)
            value = per_class(ev, order, weights[chunk], np.where(valid, num_gt[chunk], 1.0))
            total[chunk] += np.where(valid, value, 0.0)
            classes[chunk] += valid
    return np.where(classes > 0, PERCENT * total / np.maximum(classes, 1), UNDEFINED)


def ap(ev: ImageEval, weights: np.ndarray) -> np.ndarray:
    """COCO AP (IoU 0.50:0.95, area all, 100 detections) ×100 of each weighting [B]; -1 where no
    class has ground truth."""
    return _class_mean(ev, weights, _class_ap)


def _class_ap(ev: ImageEval, order: np.ndarray, w: np.ndarray, npig: np.ndarray) -> np.ndarray:
    """Mean over IoU and recall thresholds of the interpolated precision of one class [b]."""
    # Detections after the last TP at any threshold are FPs (or ignored) at every threshold: they
    # only add points of final recall and lower precision, which change no interpolated precision.
    # (Not "after the last TP at IoU 0.5": COCO matches each threshold on its own, so a detection
    # unmatched at 0.5 can match at 0.75 once a higher-scored one lost the GT there.)
    hits = np.flatnonzero(ev.det_tp[:, order].any(axis=0))
    order = order[:hits[-1] + 1] if len(hits) else order[:0]
    if len(order) == 0:
        return np.zeros(len(w))
    dw = w[:, ev.det_image[order]]  # [b, D] integer weight of each ranked detection
    # integer sums: exact (as pycocotools' sums of ones are) and cheaper than float ones
    tp = np.cumsum(dw[:, None, :] * ev.det_tp[None, :, order], axis=-1, dtype=np.int32)  # [b, T, D]
    fp = np.cumsum(dw[:, None, :] * ev.det_fp[None, :, order], axis=-1, dtype=np.int32)  # [b, T, D]
    pr = tp / (fp + tp + np.spacing(1))  # [b, T, D] float64
    pr = np.maximum.accumulate(pr[..., ::-1], axis=-1)[..., ::-1]  # precision envelope
    inds = _first_reaching(tp, npig)  # [b, T, R]
    ok = inds < tp.shape[-1]
    q = np.where(ok, np.take_along_axis(pr, np.minimum(inds, tp.shape[-1] - 1), axis=-1), 0.0)  # [b, T, R]
    return q.mean(axis=(1, 2))


def _first_reaching(tp: np.ndarray, npig: np.ndarray) -> np.ndarray:
    """For each recall threshold r, the first rank whose recall tp / npig reaches it: what
    pycocotools' `searchsorted(recall, recThrs, side="left")` returns row by row, in one call.

    Recall fl(k / n) is monotone in the integer TP count k, so "recall ≥ r" is "k ≥ k*(r)", k* the
    smallest integer with fl(k* / n) ≥ r (found from ⌈r·n⌉, corrected by one where the product
    rounded). Integer counts can then be searched in one flat sorted array (row offsets are exact).
    """
    b, num_iou, d = tp.shape
    n = npig[:, None]  # [b, 1]
    k = np.ceil(REC_THRS[None, :] * n)  # [b, R]
    k = np.where(k / n >= REC_THRS, k, k + 1)
    k = np.where((k > 0) & ((k - 1) / n >= REC_THRS), k - 1, k).astype(np.int64)  # [b, R]
    rows = b * num_iou
    span = int(max(tp.max(initial=0), k.max(initial=0))) + 2  # row offset beyond every count
    offsets = np.arange(rows, dtype=np.int64)[:, None] * span  # [rows, 1]
    keys = tp.reshape(rows, d).astype(np.int64) + offsets  # [rows, D], sorted overall
    queries = np.repeat(k, num_iou, axis=0) + offsets  # [rows, R]
    found = np.searchsorted(keys.ravel(), queries.ravel(), side="left").reshape(rows, -1)  # [rows, R]
    return (found - np.arange(rows)[:, None] * d).reshape(b, num_iou, -1)  # d where never reached


def olrp(ev: ImageEval, weights: np.ndarray, tau: float = TAU) -> np.ndarray:
    """moLRP ×100 of each weighting [B] (`pipeline.eval.olrp`'s definition, at IoU `tau`); -1 where
    no class has ground truth."""
    return _class_mean(ev, weights, partial(_class_olrp, tau=tau))


def _class_olrp(ev: ImageEval, order: np.ndarray, w: np.ndarray, num_gt: np.ndarray, tau: float) -> np.ndarray:
    """oLRP of one class [b]: the LRP of its first cut within TIE_TOL of the minimum, as
    `olrp.optimal_lrp` picks it; 1 without detections or TPs (every cut scores 1 then)."""
    if len(order) == 0:
        return np.ones(len(w))
    dw = w[:, ev.det_image[order]]  # [b, D]
    is_tp, is_fp = ev.det_tp[0, order], ev.det_fp[0, order]  # [D]
    num_tp = np.cumsum(dw * is_tp, axis=1).astype(np.float64)  # [b, D]
    num_fp = np.cumsum(dw * is_fp, axis=1).astype(np.float64)  # [b, D]
    num_fn = num_gt[:, None] - num_tp  # [b, D]
    loc = np.cumsum(dw * np.where(is_tp, 1.0 - ev.det_iou[order], 0.0), axis=1)  # [b, D]
    lrp = (loc / (1.0 - tau) + num_fp + num_fn) / (num_tp + num_fp + num_fn)  # [b, D]
    cut = np.argmax(lrp <= lrp.min(axis=1, keepdims=True) + TIE_TOL, axis=1)  # [b]
    return np.minimum(1.0, lrp[np.arange(len(lrp)), cut])
