"""COCO results and AP: conversion round trips, hand-computed AP, empty and bad inputs."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from pipeline.eval.coco_eval import (AP_NAMES, class_key, evaluate_predictions, evaluate_results,
                                     predictions_to_coco_results, write_per_class_csv, write_results_json)
from pipeline.eval.olrp import COMPONENTS, UNDEFINED
from tests.pipeline.coco_tiny import box_mask, make_coco, make_prediction

SIZE = (120, 160)  # h, w
IOU_TYPES = ("segm", "bbox")
ALL_KEYS = ({f"{t}/{n}" for t in IOU_TYPES for n in AP_NAMES + COMPONENTS}
            | {f"{t}_AP/c{c}" for t in IOU_TYPES for c in (2, 4)})  # three_sizes' classes
SMALL, MEDIUM, LARGE = [0, 0, 20, 20], [30, 30, 70, 70], [50, 0, 150, 100]  # areas 400, 1600, 10000


def three_sizes():
    anns = [{"image_id": 7, "category_id": 4, "box": SMALL},
            {"image_id": 7, "category_id": 2, "box": MEDIUM},
            {"image_id": 9, "category_id": 4, "box": LARGE}]
    return make_coco({7: SIZE, 9: SIZE}, [2, 4], anns)


def test_results_round_trip():
    mask = box_mask([3, 4, 30, 40], *SIZE)
    mask[10, 10] = False
    pred = make_prediction(7, SIZE, [([3.5, 4.25, 30.0, 40.5], 0.75, 1, mask), (MEDIUM, 0.5, 0)])
    results = predictions_to_coco_results([pred], [2, 4])
    assert [r["category_id"] for r in results] == [4, 2]
    assert results[0]["bbox"] == pytest.approx([3.5, 4.25, 26.5, 36.25])
    assert results[0]["score"] == pytest.approx(0.75)
    assert np.array_equal(mask_utils.decode(results[0]["segmentation"]).astype(bool), mask)
    assert results[0]["segmentation"]["size"] == list(SIZE)
    assert json.loads(json.dumps(results)) == results  # JSON-writable as is


def test_torch_inputs_match_numpy_inputs():
    pred = make_prediction(7, SIZE, [(SMALL, 0.9, 1), (MEDIUM, 0.4, 0)])
    as_torch = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in pred.items()}
    assert predictions_to_coco_results([as_torch], [2, 4]) == predictions_to_coco_results([pred], [2, 4])
    as_torch["scores"] = as_torch["scores"].to(torch.bfloat16)  # AMP post-processing
    scores = [r["score"] for r in predictions_to_coco_results([as_torch], [2, 4])]
    assert scores == pytest.approx([0.9, 0.4], abs=4e-3)


def test_perfect_predictions():
    preds = [make_prediction(7, SIZE, [(SMALL, 0.9, 1), (MEDIUM, 0.8, 0)]),
             make_prediction(9, SIZE, [(LARGE, 0.7, 1)])]
    m = evaluate_predictions(three_sizes(), preds, [2, 4])
    assert set(m) == ALL_KEYS
    for t in IOU_TYPES:
        assert [m[f"{t}/{n}"] for n in AP_NAMES] == pytest.approx([100.0] * 6)
        assert (m[f"{t}_AP/c2"], m[f"{t}_AP/c4"]) == pytest.approx((100.0, 100.0))
        assert [m[f"{t}/{n}"] for n in COMPONENTS] == [0.0] * 4


def test_ap_hand_computed():
    # One GT [0,0,100,100]; detection [0,0,100,62] has IoU 0.62: a TP at thresholds 0.50, 0.55
    # and 0.60 only, so AP = 3/10 of 100, AP50 = 100, AP75 = 0. It is large (area 10000).
    # oLRP: one TP, loc = 0.38 -> LRP = 0.38/0.5 = 0.76.
    coco = make_coco({1: SIZE}, [1], [{"image_id": 1, "category_id": 1, "box": [0, 0, 100, 100]}])
    m = evaluate_predictions(coco, [make_prediction(1, SIZE, [([0, 0, 100, 62], 0.9, 0)])], [1])
    for t in IOU_TYPES:
        assert (m[f"{t}/AP"], m[f"{t}/AP50"], m[f"{t}/AP75"]) == pytest.approx((30.0, 100.0, 0.0))
        assert (m[f"{t}/APS"], m[f"{t}/APM"], m[f"{t}/APL"]) == (UNDEFINED, UNDEFINED, pytest.approx(30.0))
        assert (m[f"{t}/oLRP"], m[f"{t}/oLRP_loc"]) == pytest.approx((76.0, 38.0))


def test_ap_with_a_false_positive_ranked_first():
    # FP @0.9 then the exact TP @0.8: precision 1/2 at recall 1 at every threshold -> AP 50.
    coco = make_coco({1: SIZE}, [1], [{"image_id": 1, "category_id": 1, "box": MEDIUM}])
    pred = make_prediction(1, SIZE, [(LARGE, 0.9, 0), (MEDIUM, 0.8, 0)])
    m = evaluate_predictions(coco, [pred], [1])
    assert (m["bbox/AP"], m["segm/AP"]) == pytest.approx((50.0, 50.0))
    # oLRP: k=1 -> (0+1+1)/2 = 1, k=2 -> (0+1+0)/2 = 0.5: FP = 1/2, FN = 0.
    assert (m["segm/oLRP"], m["segm/oLRP_FP"], m["segm/oLRP_FN"]) == pytest.approx((50.0, 50.0, 0.0))


def test_mask_scores_rank_masks_and_class_scores_rank_boxes():
    # The same FP-then-TP case, but re-scoring (YOLACT++) puts the exact mask first: segm AP
    # becomes 100 while bbox AP, ranked by the class score, stays 50.
    coco = make_coco({1: SIZE}, [1], [{"image_id": 1, "category_id": 1, "box": MEDIUM}])
    pred = make_prediction(1, SIZE, [(LARGE, 0.9, 0), (MEDIUM, 0.8, 0)])
    pred["mask_scores"] = np.array([0.3, 0.7])
    m = evaluate_predictions(coco, [pred], [1])
    assert (m["bbox/AP"], m["segm/AP"]) == pytest.approx((50.0, 100.0))
    pred["mask_scores"] = pred["scores"].copy()  # no re-scoring: nothing extra in the results
    assert all("mask_score" not in r for r in predictions_to_coco_results([pred], [1]))


def test_segm_area_from_box_option():
    # The FP has a 40x40 box (medium) but a 10-pixel mask (small). With box areas (official
    # mmdetection results) it counts in the medium range: APM = 50; with mask areas it falls
    # outside the medium range and is ignored there: APM = 100. Box AP is unaffected.
    coco = make_coco({1: SIZE}, [1], [{"image_id": 1, "category_id": 1, "box": MEDIUM}])
    thin = box_mask([80, 80, 90, 81], *SIZE)
    pred = make_prediction(1, SIZE, [([80, 80, 120, 120], 0.9, 0, thin), (MEDIUM, 0.8, 0)])
    from_box = evaluate_predictions(coco, [pred], [1])
    from_mask = evaluate_predictions(coco, [pred], [1], segm_area_from_box=False)
    assert (from_box["segm/APM"], from_mask["segm/APM"]) == pytest.approx((50.0, 100.0))
    assert from_box["bbox/APM"] == from_mask["bbox/APM"] == pytest.approx(50.0)


@pytest.mark.parametrize("preds", [[], [make_prediction(7, SIZE, [])]], ids=["no_images", "no_detections"])
def test_empty_results(preds):
    m = evaluate_predictions(three_sizes(), preds, [2, 4])
    assert set(m) == ALL_KEYS
    for t in IOU_TYPES:
        assert [m[f"{t}/{n}"] for n in AP_NAMES] + [m[f"{t}_AP/c2"], m[f"{t}_AP/c4"]] == [0.0] * 8
        assert (m[f"{t}/oLRP"], m[f"{t}/oLRP_FN"]) == (100.0, 100.0)
        assert (m[f"{t}/oLRP_loc"], m[f"{t}/oLRP_FP"]) == (UNDEFINED, UNDEFINED)


def test_per_class_ap_equals_evaluating_each_class_alone(tmp_path):
    # Class 4: its small GT is missed and the large one found at IoU 0.62: at 3 of 10 thresholds
    # precision 1 up to recall 0.5, i.e. on 51 of the 101 recall points; class 2: an FP ranked
    # before the exact TP (AP 50). The slow reference: COCOeval on one class at a time.
    preds = [make_prediction(7, SIZE, [(LARGE, 0.9, 0), (MEDIUM, 0.8, 0)]),
             make_prediction(9, SIZE, [([50, 0, 150, 62], 0.7, 1)])]
    results = predictions_to_coco_results(preds, [2, 4])
    m = evaluate_results(three_sizes(), results)
    for t in IOU_TYPES:
        alone = {}
        for cat in (2, 4):
            ev = COCOeval(three_sizes(), three_sizes().loadRes([dict(r) for r in results]), t)
            ev.params.catIds = [cat]
            with contextlib.redirect_stdout(io.StringIO()):
                ev.evaluate(), ev.accumulate(), ev.summarize()
            alone[f"{t}_AP/c{cat}"] = 100.0 * ev.stats[0]
        c4 = 100.0 * 3 / 10 * 51 / 101
        assert alone == pytest.approx({f"{t}_AP/c2": 50.0, f"{t}_AP/c4": c4})
        assert {k: m[k] for k in alone} == pytest.approx(alone)
        assert m[f"{t}/AP"] == pytest.approx((50.0 + c4) / 2)  # the summary is their mean
    table = write_per_class_csv(m, tmp_path / "per_class_ap.csv").read_text()
    assert table == "class,segm_AP,bbox_AP\nc2,50.00,50.00\nc4,15.15,15.15\n"


def test_class_names_become_safe_metric_names():
    assert class_key("segm", "traffic light") == "segm_AP/traffic light"
    assert class_key("bbox", "hot-dog (big)") == "bbox_AP/hot-dog _big_"
    coco = make_coco({1: SIZE}, [1, 2], [{"image_id": 1, "category_id": 1, "box": MEDIUM},
                                         {"image_id": 1, "category_id": 2, "box": SMALL}])
    for cat in coco.dataset["categories"]:
        cat["name"] = "a+b" if cat["id"] == 1 else "a*b"  # both clean to "a_b"
    coco.createIndex()
    m = evaluate_predictions(coco, [make_prediction(1, SIZE, [(MEDIUM, 0.9, 0)])], [1, 2])
    assert (m["segm_AP/a_b"], m["segm_AP/a_b_2"]) == (pytest.approx(100.0), 0.0)


def test_no_ground_truth_at_all():
    coco = make_coco({1: SIZE}, [1], [])
    m = evaluate_predictions(coco, [make_prediction(1, SIZE, [(SMALL, 0.9, 0)])], [1])
    assert set(m.values()) == {UNDEFINED}


def test_results_json_file_evaluates_the_same(tmp_path):
    preds = [make_prediction(7, SIZE, [(SMALL, 0.9, 1), ([28, 33, 70, 70], 0.8, 0), (LARGE, 0.3, 0)]),
             make_prediction(9, SIZE, [([50, 5, 150, 100], 0.7, 1)])]
    path = tmp_path / "out" / "results.json"
    direct = evaluate_predictions(three_sizes(), preds, [2, 4], results_path=path)
    from_file = evaluate_results(three_sizes(), json.loads(path.read_text()))
    assert from_file == direct
    assert write_results_json([], tmp_path / "empty.json").read_text() == "[]"


def test_pycocotools_prints_are_captured(capsys):
    coco = three_sizes()
    capsys.readouterr()  # building the GT COCO object prints too
    evaluate_predictions(coco, [make_prediction(7, SIZE, [(SMALL, 0.9, 1)])], [2, 4])
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("change, match", [
    (lambda p: p.update(image_id=99), "image ids \\[99\\]"),
    (lambda p: p["labels"].__setitem__(0, 5), "labels \\[5\\] outside 0..1"),
    (lambda p: p.update(masks=np.zeros((1, 60, 80), dtype=bool)), "60x80"),
    (lambda p: p.update(scores=np.zeros(2, dtype=np.float32)), "must be"),
    (lambda p: p.pop("masks"), "lacks \\['masks'\\]"),
    (lambda p: p.update(boxes=np.zeros((1, 5), dtype=np.float32)), "boxes \\[1, 5\\]"),
    (lambda p: p.update(masks=p["masks"].astype(np.float32)), "float32; they must be bool"),
])
def test_bad_predictions_are_rejected(change, match):
    pred = make_prediction(7, SIZE, [(SMALL, 0.9, 1)])
    change(pred)
    with pytest.raises(ValueError, match=match):
        evaluate_predictions(three_sizes(), [pred], [2, 4])


def test_unknown_category_and_gt_id_zero_are_rejected():
    pred = make_prediction(7, SIZE, [(SMALL, 0.9, 1)])
    with pytest.raises(ValueError, match="category ids \\[5\\]"):
        evaluate_predictions(three_sizes(), [pred], [2, 5])
    coco = make_coco({7: SIZE}, [4], [{"image_id": 7, "category_id": 4, "box": SMALL, "id": 0}])
    with pytest.raises(ValueError, match="id 0"):
        evaluate_predictions(coco, [pred], [2, 4])
