"""oLRP (docs/design.md §10, LRP-Error TPAMI definition): hand-computed cases and a brute-force reference.

Hand cases (rectangles, so mask IoU = box IoU and segm = bbox; τ = 0.5, weight 1/(1−τ) = 2):

A  category 1, label 0. GT: image 1 [0,0,40,40], image 2 [0,0,40,40] (N_GT = 2).
   Detections: image 1 d1 = GT box @0.9 (TP, IoU 1), d2 [50,50,90,90] @0.8 (FP);
   image 2 d3 = GT box @0.8 (TP, IoU 1). The 0.8 tie ranks image 1 first: d1, d2, d3.
   k=1: (0+0+1)/(1+0+1) = 1/2;  k=2: (0+1+1)/(1+1+1) = 2/3;  k=3: (0+1+0)/(2+1+0) = 1/3.
   -> oLRP 1/3, loc 0, FP 1/3, FN 0.  (With the FP in image 2 instead, k=2 gives 0.)
B  category 3, label 1. GT image 1 [0,0,40,40]. Detections in list order, both @0.7:
   d1 [0,0,40,24] (IoU 960/1600 = 0.6) then d2 = GT box. Greedy in list order: d1 TP, d2 FP.
   k=1: (0.4·2)/1 = 0.8;  k=2: (0.8+1+0)/2 = 0.9.  -> oLRP 0.8, loc 0.4, FP 0, FN 0.
C  category 7, label 2. GT image 1 [10,50,30,70]; no detections -> oLRP 1, FN 1, no loc/FP.
D  category 9, label 3. No GT; detections in image 2 -> excluded everywhere.
E  category 11, label 4. GT image 2 [0,0,40,40]. d1 [50,50,90,90] @0.9 (FP),
   d2 [0,0,40,20] @0.6 (IoU 800/1600 = 0.5 exactly: a TP).
   k=1: (0+1+1)/2 = 1;  k=2: (0.5·2+1+0)/2 = 1.  First cut wins -> oLRP 1, FP 1/1 = 1, FN 1, no loc.
Means over classes with GT (A, B, C, E):
   moLRP = (1/3 + 0.8 + 1 + 1)/4 = 0.78333…;  loc = (0 + 0.4)/2 = 0.2  (A, B);
   FP = (1/3 + 0 + 1)/3 = 0.4444…  (A, B, E);  FN = (0 + 0 + 1 + 1)/4 = 0.5.
"""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.eval.coco_eval import evaluate_predictions, run_cocoeval, predictions_to_coco_results
from pipeline.eval.olrp import (TIE_TOL, UNDEFINED, RankedDetections, olrp_per_class, optimal_lrp,
                                summarize_olrp)
from tests.pipeline.coco_tiny import box_mask, make_coco, make_prediction

SIZE = (100, 100)
CATS = [1, 3, 7, 9, 11]  # label -> category id
GT_BOX = [0, 0, 40, 40]
FAR_BOX = [50, 50, 90, 90]


def hand_dataset(fp_image_for_a: int = 1):
    anns = [
        {"image_id": 1, "category_id": 1, "box": GT_BOX},
        {"image_id": 2, "category_id": 1, "box": GT_BOX},
        {"image_id": 1, "category_id": 3, "box": GT_BOX},
        {"image_id": 1, "category_id": 7, "box": [10, 50, 30, 70]},
        {"image_id": 2, "category_id": 11, "box": GT_BOX},
    ]
    coco = make_coco({1: SIZE, 2: SIZE}, CATS, anns)
    dets = {1: [(GT_BOX, 0.9, 0), ([0, 0, 40, 24], 0.7, 1), (GT_BOX, 0.7, 1)],
            2: [(GT_BOX, 0.8, 0), (FAR_BOX, 0.5, 3), (GT_BOX, 0.4, 3),
                (FAR_BOX, 0.9, 4), ([0, 0, 40, 20], 0.6, 4)]}
    dets[fp_image_for_a].append((FAR_BOX, 0.8, 0))
    preds = [make_prediction(i, SIZE, d) for i, d in dets.items()]
    return coco, preds


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_hand_cases_per_class(iou_type):
    coco, preds = hand_dataset()
    results = predictions_to_coco_results(preds, CATS)
    per_class = olrp_per_class(run_cocoeval(coco, results, iou_type))
    assert sorted(per_class) == [1, 3, 7, 11]  # category 9 has no GT: excluded
    a, b, c, e = per_class[1], per_class[3], per_class[7], per_class[11]
    assert (a.olrp, a.loc, a.fp, a.fn) == pytest.approx((1 / 3, 0.0, 1 / 3, 0.0))
    assert (a.num_tp, a.num_fp, a.threshold) == (2, 1, pytest.approx(0.8))
    assert (b.olrp, b.loc, b.fp, b.fn) == pytest.approx((0.8, 0.4, 0.0, 0.0))
    assert (b.num_tp, b.num_fp) == (1, 0)
    assert (c.olrp, c.loc, c.fp, c.fn) == (1.0, None, None, 1.0)
    assert (e.olrp, e.loc, e.fp, e.fn) == (1.0, None, 1.0, 1.0)
    assert (e.num_tp, e.num_fp, e.threshold) == (0, 1, pytest.approx(0.9))


def test_hand_cases_means_segm_and_bbox():
    coco, preds = hand_dataset()
    m = evaluate_predictions(coco, preds, CATS)
    for t in ("segm", "bbox"):
        assert m[f"{t}/oLRP"] == pytest.approx(100 * (1 / 3 + 0.8 + 1 + 1) / 4)
        assert m[f"{t}/oLRP_loc"] == pytest.approx(100 * 0.2)
        assert m[f"{t}/oLRP_FP"] == pytest.approx(100 * 4 / 9)
        assert m[f"{t}/oLRP_FN"] == pytest.approx(50.0)


def test_tie_in_score_ranks_by_image_id():
    # Case A with the 0.8 FP moved to image 2: ranking d1, d3, FP, and k=2 is perfect.
    coco, preds = hand_dataset(fp_image_for_a=2)
    a = olrp_per_class(run_cocoeval(coco, predictions_to_coco_results(preds, CATS), "bbox"))[1]
    assert (a.olrp, a.loc, a.fp, a.fn, a.num_tp, a.num_fp) == (0.0, 0.0, 0.0, 0.0, 2, 0)


def test_tie_in_score_inside_an_image_keeps_list_order():
    # Case B with the two equal-score detections listed the other way round: the exact box
    # comes first, takes the GT, and the cut after it is perfect.
    coco = make_coco({1: SIZE}, [3], [{"image_id": 1, "category_id": 3, "box": GT_BOX}])
    pred = make_prediction(1, SIZE, [(GT_BOX, 0.7, 0), ([0, 0, 40, 24], 0.7, 0)])
    b = olrp_per_class(run_cocoeval(coco, predictions_to_coco_results([pred], [3]), "segm"))[3]
    assert (b.olrp, b.loc, b.fp, b.fn) == (0.0, 0.0, 0.0, 0.0)


def test_perfect_predictions_give_zero():
    boxes = {1: [[0, 0, 40, 40], [50, 10, 60, 30]], 2: [[5, 5, 95, 95]]}
    anns = [{"image_id": i, "category_id": 1 + k % 2, "box": b}
            for i, bs in boxes.items() for k, b in enumerate(bs)]
    coco = make_coco({1: SIZE, 2: SIZE}, [1, 2], anns)
    preds = [make_prediction(i, SIZE, [(b, 0.9 - 0.1 * k, k % 2) for k, b in enumerate(bs)])
             for i, bs in boxes.items()]
    m = evaluate_predictions(coco, preds, [1, 2])
    for t in ("segm", "bbox"):
        assert [m[f"{t}/{k}"] for k in ("oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN")] == [0.0] * 4


def test_crowd_match_is_ignored_and_crowd_only_class_is_excluded():
    anns = [{"image_id": 1, "category_id": 1, "box": GT_BOX},
            {"image_id": 1, "category_id": 1, "box": FAR_BOX, "iscrowd": 1},
            {"image_id": 1, "category_id": 2, "box": GT_BOX, "iscrowd": 1}]
    coco = make_coco({1: SIZE}, [1, 2], anns)
    # On the crowd region @0.95 (ignored, not an FP), then the exact GT @0.9; class 2 has only crowd.
    pred = make_prediction(1, SIZE, [(FAR_BOX, 0.95, 0), (GT_BOX, 0.9, 0), ([0, 0, 10, 10], 0.8, 1)])
    per_class = olrp_per_class(run_cocoeval(coco, predictions_to_coco_results([pred], [1, 2]), "segm"))
    assert sorted(per_class) == [1]
    assert (per_class[1].olrp, per_class[1].fp, per_class[1].num_fp) == (0.0, 0.0, 0)


def test_hundred_detections_per_image_and_class():
    # 101 detections of one class in one image: the 100 FPs ranked first are kept, the TP
    # at rank 101 is cut off, so the class has no TP at all.
    coco = make_coco({1: SIZE}, [1], [{"image_id": 1, "category_id": 1, "box": GT_BOX}])
    dets = [(FAR_BOX, 0.9, 0)] * 100 + [(GT_BOX, 0.1, 0)]
    c = olrp_per_class(run_cocoeval(coco, predictions_to_coco_results([make_prediction(1, SIZE, dets)], [1]), "bbox"))[1]
    assert (c.olrp, c.loc, c.fp, c.fn) == (1.0, None, None, 1.0)


# --- optimal_lrp on ranked arrays --------------------------------------------------------------

def ranked(outcomes: str, ious=(), num_gt: int = 1) -> RankedDetections:
    """'T' TP, 'F' FP, 'I' ignored, in rank order; TP IoUs in order."""
    is_tp = np.array([o == "T" for o in outcomes], dtype=bool)
    iou = np.zeros(len(outcomes))
    iou[is_tp] = ious
    scores = np.linspace(1.0, 0.1, len(outcomes)) if outcomes else np.zeros(0)
    return RankedDetections(scores, is_tp, np.array([o == "F" for o in outcomes], dtype=bool), iou, num_gt)


def test_optimal_lrp_arrays():
    # T(0.9) F T(0.7) F, 3 GTs: k1 (0.2+0+2)/3 = .7333, k2 (0.2+1+2)/4 = .8,
    # k3 (0.2+0.6+1+1)/4 = .7, k4 (0.8+2+1)/5 = .76 -> k3: loc (0.1+0.3)/2, FP 1/3, FN 1/3.
    r = optimal_lrp(ranked("TFTF", [0.9, 0.7], num_gt=3))
    assert (r.olrp, r.loc, r.fp, r.fn, r.num_tp, r.num_fp) == pytest.approx((0.7, 0.2, 1 / 3, 1 / 3, 2, 1))
    # An ignored detection repeats the previous value; the earlier cut wins the tie.
    r = optimal_lrp(ranked("TI", [1.0]))
    assert (r.olrp, r.num_tp, r.threshold) == (0.0, 1, 1.0)
    # Only ignored before the TP: every cut before it is 1.
    r = optimal_lrp(ranked("IIT", [0.75]))
    assert (r.olrp, r.loc, r.fp, r.fn) == pytest.approx((0.5, 0.25, 0.0, 0.0))
    # No detection / no TP / no GT.
    assert (optimal_lrp(ranked("")).olrp, optimal_lrp(ranked("")).fp) == (1.0, None)
    assert (optimal_lrp(ranked("FF")).olrp, optimal_lrp(ranked("FF")).loc) == (1.0, None)
    assert optimal_lrp(ranked("TF", [1.0], num_gt=0)) is None


def test_summarize_undefined_means_are_minus_one_not_nan():
    r = optimal_lrp(ranked("F"))
    assert summarize_olrp({1: r}, "segm") == {"segm/oLRP": 100.0, "segm/oLRP_loc": UNDEFINED,
                                              "segm/oLRP_FP": UNDEFINED, "segm/oLRP_FN": 100.0}
    assert set(summarize_olrp({}, "bbox").values()) == {UNDEFINED}


def test_cocoeval_must_have_run():
    coco, preds = hand_dataset()
    from pycocotools.cocoeval import COCOeval
    with pytest.raises(ValueError, match="evaluate"):
        olrp_per_class(COCOeval(coco, coco, "bbox"))


# --- brute-force reference -------------------------------------------------------------------

def iou_boxes(d, g, crowd: bool) -> float:
    """xyxy boxes; for a crowd GT pycocotools divides by the detection's area."""
    iw = max(0.0, min(d[2], g[2]) - max(d[0], g[0]))
    ih = max(0.0, min(d[3], g[3]) - max(d[1], g[1]))
    inter = iw * ih
    area_d = (d[2] - d[0]) * (d[3] - d[1])
    union = area_d if crowd else area_d + (g[2] - g[0]) * (g[3] - g[1]) - inter
    return inter / union if union > 0 else 0.0


def iou_masks(d, g, crowd: bool) -> float:
    inter = float(np.logical_and(d, g).sum())
    union = float(d.sum()) if crowd else float(np.logical_or(d, g).sum())
    return inter / union if union > 0 else 0.0


def brute_force(gts, dets, iou_fn, max_dets=100):
    """Per class: rank, then for every cut re-run a direct greedy matcher on the top-k.

    gts: (image_id, cat, geom, crowd); dets: (image_id, cat, geom, score) in results order.
    """
    out = {}
    for cat in sorted({g[1] for g in gts if not g[3]}):
        num_gt = sum(1 for g in gts if g[1] == cat and not g[3])
        kept = []
        for img in sorted({d[0] for d in dets}):
            mine = [(i, d) for i, d in enumerate(dets) if d[0] == img and d[1] == cat]
            mine.sort(key=lambda t: -t[1][3])  # stable: equal scores keep list order
            kept += [(img, pos, d) for pos, (_, d) in enumerate(mine[:max_dets])]
        kept.sort(key=lambda t: (-t[2][3], t[0], t[1]))
        best = None
        for k in range(1, len(kept) + 1):
            tp_ious, n_fp = [], 0
            for img in sorted({t[0] for t in kept[:k]}):
                img_gts = [g for g in gts if g[0] == img and g[1] == cat]
                taken = [False] * len(img_gts)
                for _, _, d in [t for t in kept[:k] if t[0] == img]:
                    found = None
                    for want_crowd in (False, True):
                        best_iou = 0.5
                        for j, g in enumerate(img_gts):
                            if g[3] != want_crowd or (taken[j] and not g[3]):
                                continue
                            v = iou_fn(d[2], g[2], g[3])
                            if v >= best_iou:  # later GT wins equal IoU, as in pycocotools
                                best_iou, found = v, j
                        if found is not None:
                            break
                    if found is None:
                        n_fp += 1
                    elif not img_gts[found][3]:
                        taken[found] = True
                        tp_ious.append(iou_fn(d[2], img_gts[found][2], False))
            n_tp = len(tp_ious)
            n_fn = num_gt - n_tp
            lrp = (sum(1 - v for v in tp_ious) / 0.5 + n_fp + n_fn) / (n_tp + n_fp + n_fn)
            if best is None or lrp < best[0] - TIE_TOL:  # the first cut wins ties
                best = (lrp, sum(1 - v for v in tp_ious) / n_tp if n_tp else None,
                        n_fp / (n_tp + n_fp) if n_tp + n_fp else None, n_fn / num_gt)
        # No TP over all cuts (or no detection): loc and FP undefined, as in the official code.
        out[cat] = best if best is not None and n_tp > 0 else (1.0, None, None, 1.0)
    return out


def random_case(rng, n_images=4, cats=(1, 2, 3), size=32):
    """Integer rectangles (many exact IoU ties, some exactly 0.5), perturbed detections, tied
    scores, crowd GTs, masks with holes so that mask IoU differs from box IoU."""
    h = w = size

    def rect():
        x0, y0 = rng.integers(0, size - 6, 2)
        return [int(x0), int(y0), int(min(size, x0 + rng.integers(4, 16))), int(min(size, y0 + rng.integers(4, 16)))]

    def holed(box):
        m = box_mask(box, h, w)
        m &= rng.random((h, w)) > 0.05
        m[box[1], box[0]] = True  # never empty
        return m

    gts, dets, anns, preds = [], [], [], []
    for img in range(1, n_images + 1):
        img_dets = []
        for cat in cats[:-1]:  # the last category never has GT
            for _ in range(rng.integers(0, 4)):
                box = rect()
                mask, crowd = holed(box), bool(rng.random() < 0.15)
                anns.append({"image_id": img, "category_id": cat, "box": box, "mask": mask, "iscrowd": crowd})
                gts.append((img, cat, (box, mask), crowd))
                for _ in range(rng.integers(0, 3)):
                    shift = rng.integers(-2, 3, 4)
                    dbox = [int(np.clip(v + s, 0, size)) for v, s in zip(box, shift)]
                    if dbox[2] <= dbox[0] or dbox[3] <= dbox[1]:
                        continue
                    img_dets.append((dbox, holed(dbox), cat))
        for _ in range(rng.integers(0, 4)):
            box = rect()
            img_dets.append((box, holed(box), int(rng.choice(cats))))
        for box, mask, cat in img_dets:
            score = float(np.float32(rng.choice([0.9, 0.7, 0.5]) if rng.random() < 0.5 else rng.random()))
            dets.append((img, cat, (box, mask), score))
        preds.append(make_prediction(img, (h, w), [(b, s, list(cats).index(c), m)
                                                   for (i, c, (b, m), s) in dets if i == img]))
    coco = make_coco({i: (h, w) for i in range(1, n_images + 1)}, list(cats), anns)
    return coco, preds, gts, dets


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    coco, preds, gts, dets = random_case(rng)
    results = predictions_to_coco_results(preds, [1, 2, 3])
    for iou_type, pick, iou_fn in (("bbox", 0, iou_boxes), ("segm", 1, iou_masks)):
        fast = olrp_per_class(run_cocoeval(coco, results, iou_type))
        slow = brute_force([(i, c, geo[pick], cr) for i, c, geo, cr in gts],
                           [(i, c, geo[pick], s) for i, c, geo, s in dets], iou_fn)
        assert sorted(fast) == sorted(slow), (iou_type, seed)
        for cat, (olrp, loc, fp, fn) in slow.items():
            got, where = fast[cat], (iou_type, seed, cat)
            assert (got.olrp, got.fn) == pytest.approx((olrp, fn), abs=1e-9), where
            assert (got.loc is None, got.fp is None) == (loc is None, fp is None), where
            if loc is not None:
                assert got.loc == pytest.approx(loc, abs=1e-9), where
            if fp is not None:
                assert got.fp == pytest.approx(fp, abs=1e-9), where
