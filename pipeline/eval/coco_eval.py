"""COCO evaluation of post-processed predictions: results list, AP (pycocotools) and oLRP.

Pure functions: no Ray, no MLflow. Contracts:
- `predictions`: one dict per image with `image_id` (the original dataset id) and what
  `model.postprocess` returns: `boxes` [N,4] xyxy original-image pixels, `scores` [N], `labels`
  [N] int contiguous 0..C-1, `masks` bool [N,h,w] at the original image size (torch tensors on
  any device, or numpy arrays).
- `label_to_cat`: `label_to_cat[label]` is the original category id of contiguous label `label`.
- COCO results (JSON-writable): `{image_id, category_id, bbox [x, y, w, h], score,
  segmentation {size [h, w], counts str}}`, one per detection; one list serves segm and bbox.
- Metrics: flat keys `segm/AP`, `segm/AP50`, `segm/AP75`, `segm/APS`, `segm/APM`, `segm/APL`,
  `segm/oLRP`, `segm/oLRP_loc`, `segm/oLRP_FP`, `segm/oLRP_FN`, the same for `bbox/`, all ×100.
  Per class: `segm_AP/<class name>` and `bbox_AP/<class name>` (AP@[.5:.95], all areas, ×100), from
  the same COCOeval (`per_class_ap`); the prefix keeps them apart from the summary keys above.
  A metric with nothing to average over (no GT in that area range, no class with GT, no TP
  for oLRP_loc) is `UNDEFINED` = -1, pycocotools' own convention; never NaN.

An empty results list is a normal case (pycocotools' `loadRes` crashes on it): it is evaluated
against an empty detection set, so every class with GT gets AP 0 and oLRP 100.

Ground truth with annotation id 0 is refused: pycocotools stores matched GT ids with 0 meaning
"unmatched", so such a GT's matches would silently count as false positives.

pycocotools mutates `coco_gt` while evaluating (GT segmentations become RLE, `ignore` flags are
set from `iscrowd`); that is its usual behaviour and does not change later evaluations.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.data.arrays import to_numpy
from pipeline.eval.image_eval import ImageEval, image_eval
from pipeline.eval.olrp import UNDEFINED, olrp_per_class, summarize_olrp

IOU_TYPES = ("segm", "bbox")
AP_NAMES = ("AP", "AP50", "AP75", "APS", "APM", "APL")  # COCOeval.stats[0:6]
PER_CLASS_SUFFIX = "_AP"  # `segm_AP/<class>`: per-class AP keys
# MLflow metric names allow letters, digits and `_-. :/`; anything else in a class name becomes `_`.
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")
PREDICTION_KEYS = ("image_id", "boxes", "scores", "labels", "masks")
# Optional result field: a mask's own score (YOLACT++ re-scoring), used instead of `score` for segm.
MASK_SCORE = "mask_score"

log = logging.getLogger(__name__)


def _prediction_arrays(i: int, pred: dict, num_labels: int):
    """One prediction's (image_id, boxes, scores, labels, masks) as checked numpy arrays."""
    missing = [k for k in PREDICTION_KEYS if k not in pred]
    if missing:
        raise ValueError(f"predictions[{i}] lacks {missing}; expected keys {list(PREDICTION_KEYS)}")
    image_id = int(pred["image_id"])
    where = f"predictions[{i}] (image {image_id})"
    scores = to_numpy(pred["scores"]).astype(np.float64).reshape(-1)  # [N]
    n = len(scores)
    boxes = to_numpy(pred["boxes"]).astype(np.float64)
    boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes  # [N, 4] xyxy
    labels = to_numpy(pred["labels"]).astype(np.int64).reshape(-1)  # [N]
    masks = to_numpy(pred["masks"])
    if boxes.shape != (n, 4) or len(labels) != n or masks.ndim != 3 or len(masks) != n:
        raise ValueError(f"{where}: boxes {list(boxes.shape)}, scores {list(scores.shape)}, labels "
                         f"{list(labels.shape)} and masks {list(masks.shape)} must be [N,4], [N], [N], [N,h,w]")
    if masks.dtype.kind not in "bu":
        raise ValueError(f"{where}: masks are {masks.dtype}; they must be bool (threshold them first)")
    bad = labels[(labels < 0) | (labels >= num_labels)]
    if len(bad):
        raise ValueError(f"{where}: labels {sorted(set(bad.tolist()))} outside 0..{num_labels - 1} "
                         f"(label_to_cat has {num_labels} entries)")
    return image_id, boxes, scores, labels, masks.astype(bool, copy=False)


def predictions_to_coco_results(predictions: Iterable[dict], label_to_cat: Sequence[int]) -> list[dict]:
    """Post-processed predictions -> COCO results list (original category ids, RLE masks)."""
    cats = [int(c) for c in label_to_cat]
    results = []
    for i, pred in enumerate(predictions):
        image_id, boxes, scores, labels, masks = _prediction_arrays(i, pred, len(cats))
        n = len(scores)
        if n == 0:
            continue
        # pycocotools encodes a Fortran-ordered uint8 stack [h, w, N] in one call; that is the
        # memory of C-ordered [N, w, h], so one per-mask transpose is the only copy.
        stack = np.ascontiguousarray(masks.transpose(0, 2, 1))  # [N, w, h]
        rles = mask_utils.encode(stack.view(np.uint8).transpose(2, 1, 0))  # [h, w, N], F-ordered
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)  # [N, 4]
        # YOLACT++ re-scoring ranks masks by class score × predicted mask IoU; boxes keep the class score.
        mask_scores = (to_numpy(pred["mask_scores"]).astype(np.float64).reshape(-1).tolist()
                       if "mask_scores" in pred else [None] * n)
        for box, score, mscore, label, rle in zip(xywh.tolist(), scores.tolist(), mask_scores,
                                                  labels.tolist(), rles):
            result = {
                "image_id": image_id,
                "category_id": cats[label],
                "bbox": box,
                "score": score,
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            }
            if mscore is not None and mscore != score:
                result[MASK_SCORE] = mscore
            results.append(result)
    return results


def write_results_json(results: list[dict], path: str | Path) -> Path:
    """Write a COCO results list as JSON (the file pycocotools' `loadRes` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results))
    return path


def _check_gt(coco_gt: COCO) -> None:
    zero = [a for a in coco_gt.dataset.get("annotations", []) if a.get("id") == 0]
    if zero:
        # pycocotools stores matched GT ids with 0 meaning "unmatched": a match to id 0 would be
        # scored as a false positive in both AP and oLRP.
        raise ValueError(f"coco_gt has an annotation with id 0 (image {zero[0].get('image_id')}); "
                         "pycocotools treats id 0 as 'unmatched' — number annotations from 1")


def _check_results(coco_gt: COCO, results: list[dict]) -> None:
    images = coco_gt.imgs
    unknown_images = sorted({r["image_id"] for r in results} - set(images))
    if unknown_images:
        raise ValueError(f"results refer to image ids {unknown_images[:10]} that coco_gt does not have")
    unknown_cats = sorted({r["category_id"] for r in results} - set(coco_gt.cats))
    if unknown_cats:
        raise ValueError(f"results use category ids {unknown_cats} that coco_gt does not have; "
                         f"valid: {sorted(coco_gt.cats)} (check label_to_cat)")
    for r in results:
        img = images[r["image_id"]]
        size = r.get("segmentation", {}).get("size")
        if size is not None and "height" in img and list(size) != [img["height"], img["width"]]:
            raise ValueError(f"result mask for image {r['image_id']} is {size[0]}x{size[1]}, "
                             f"the image is {img['height']}x{img['width']} (masks must be at the original size)")


def _results_coco(coco_gt: COCO, results: list[dict], iou_type: str, segm_area_from_box: bool) -> COCO:
    """The detections as a COCO object; an empty list gives an empty one (loadRes crashes on [])."""
    if not results:
        res = COCO()
        res.dataset = {"images": list(coco_gt.dataset["images"]),
                       "categories": [dict(c) for c in coco_gt.dataset["categories"]], "annotations": []}
        res.createIndex()
        return res
    # Copies: loadRes writes ids and areas into the dicts it gets.
    anns = [dict(r) for r in results]
    if iou_type == "segm":
        for a in anns:  # masks are ranked by their own score where the model gives one
            a["score"] = a.pop(MASK_SCORE, a["score"])
    if iou_type == "segm" and not segm_area_from_box:
        for a in anns:  # without a box, loadRes takes each detection's area from its mask
            a.pop("bbox", None)
    return coco_gt.loadRes(anns)


def run_cocoeval(coco_gt: COCO, results: list[dict], iou_type: str, *,
                 segm_area_from_box: bool = True) -> COCOeval:
    """pycocotools COCOeval (evaluate, accumulate, summarize) with its prints captured to the log.

    `segm_area_from_box` (paper preset): mmdetection's segm results carry boxes, so pycocotools
    takes each detection's area from its box, which only moves detections between the S/M/L
    ranges of mask AP. False uses the mask area (pycocotools' behaviour for mask-only results).
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type {iou_type!r} is not one of {IOU_TYPES}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        coco_dt = _results_coco(coco_gt, results, iou_type, segm_area_from_box)
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    log.debug("pycocotools %s:\n%s", iou_type, out.getvalue())
    return coco_eval


def ap_metrics(coco_eval: COCOeval, prefix: str) -> dict[str, float]:
    """AP, AP50, AP75, APS, APM, APL ×100 from a summarized COCOeval (UNDEFINED stays -1)."""
    return {f"{prefix}/{name}": 100.0 * float(v) if v >= 0 else UNDEFINED
            for name, v in zip(AP_NAMES, coco_eval.stats[:len(AP_NAMES)])}


def class_key(iou_type: str, name: str) -> str:
    """The metric name of one class's AP: `segm_AP/person`; unsafe characters become `_`."""
    return f"{iou_type}{PER_CLASS_SUFFIX}/{_UNSAFE.sub('_', name)}"


def per_class_ap(coco_eval: COCOeval, prefix: str) -> dict[str, float]:
    """AP@[.5:.95] of every category (all areas, the last maxDets) ×100, keyed by `class_key`.

    The mean over IoU thresholds and recall points of `eval["precision"]` [T, R, K, A, M] where it
    is defined, as `COCOeval.summarize` computes `stats[0]` over all classes; a class without GT
    is UNDEFINED. Two classes whose names clash after cleaning get their category id appended.
    """
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # [T, R, K]: area "all", maxDets 100
    cats = coco_eval.cocoGt.cats
    out: dict[str, float] = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k]  # [T, R]
        key = class_key(prefix, str(cats[cat_id].get("name", cat_id)))
        key = f"{key}_{cat_id}" if key in out else key
        out[key] = 100.0 * float(p[p > -1].mean()) if (p > -1).any() else UNDEFINED
    return out


def write_per_class_csv(metrics: dict[str, float], path: str | Path) -> Path:
    """The per-class AP of `metrics` as a table: `class,segm_AP,bbox_AP` (an evaluation artifact)."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        head, _, name = key.partition("/")
        if head.endswith(PER_CLASS_SUFFIX) and head.removesuffix(PER_CLASS_SUFFIX) in IOU_TYPES:
            rows.setdefault(name, {})[head] = value
    columns = [f"{t}{PER_CLASS_SUFFIX}" for t in IOU_TYPES]
    lines = [",".join(["class", *columns])]
    lines += [",".join([json.dumps(name) if "," in name else name,
                        *(f"{row.get(c, UNDEFINED):.2f}" for c in columns)]) for name, row in rows.items()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def evaluate_results(coco_gt: COCO, results: list[dict], *, iou_types: Sequence[str] = IOU_TYPES,
                     segm_area_from_box: bool = True) -> dict[str, float]:
    """AP and oLRP keys for each IoU type from a COCO results list."""
    return evaluate_per_image(coco_gt, results, iou_types=iou_types, segm_area_from_box=segm_area_from_box)[0]


def evaluate_per_image(coco_gt: COCO, results: list[dict], *, iou_types: Sequence[str] = IOU_TYPES,
                       segm_area_from_box: bool = True) -> tuple[dict[str, float], dict[str, ImageEval]]:
    """`evaluate_results`, and per IoU type the per-image outcome the report resamples
    (`pipeline.eval.image_eval`)."""
    _check_gt(coco_gt)
    _check_results(coco_gt, results)
    metrics: dict[str, float] = {}
    per_image: dict[str, ImageEval] = {}
    for iou_type in iou_types:
        coco_eval = run_cocoeval(coco_gt, results, iou_type, segm_area_from_box=segm_area_from_box)
        metrics.update(ap_metrics(coco_eval, iou_type))
        metrics.update(per_class_ap(coco_eval, iou_type))
        metrics.update(summarize_olrp(olrp_per_class(coco_eval), iou_type))
        per_image[iou_type] = image_eval(coco_eval)
    return metrics, per_image


def evaluate_predictions(coco_gt: COCO, predictions: Iterable[dict], label_to_cat: Sequence[int], *,
                         segm_area_from_box: bool = True,
                         results_path: str | Path | None = None) -> dict[str, float]:
    """All `segm/` and `bbox/` AP and oLRP metrics (×100) of post-processed predictions.

    With `results_path`, the COCO results list is also written there as JSON (an artifact).
    """
    results = predictions_to_coco_results(predictions, label_to_cat)
    if results_path is not None:
        write_results_json(results, results_path)
    return evaluate_results(coco_gt, results, segm_area_from_box=segm_area_from_box)
