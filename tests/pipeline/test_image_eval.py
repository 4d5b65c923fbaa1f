"""Re-weighted COCO AP and oLRP: all-ones weights equal pycocotools, integer weights equal
pycocotools on a dataset that literally holds each image that many times."""
import numpy as np
import pytest

from pipeline.eval import image_eval as IE
from pipeline.eval.coco_eval import evaluate_results, predictions_to_coco_results, run_cocoeval
from tests.pipeline.coco_tiny import make_coco, make_prediction

SIZE = (48, 64)
CATS = (1, 2, 5)


def _random_case(seed: int, num_images: int = 7):
    """Random GT rectangles and jittered, partly wrong detections with distinct scores."""
    rng = np.random.default_rng(seed)
    gts, preds, scores = [], [], rng.permutation(10_000)[:400] / 10_000 + 0.01  # distinct: no ties
    s = iter(scores)
    for img in range(1, num_images + 1):
        dets = []
        for _ in range(rng.integers(0, 5)):
            x0, y0 = rng.integers(0, 40), rng.integers(0, 28)
            box = [x0, y0, x0 + rng.integers(4, 24), y0 + rng.integers(4, 20)]
            label = int(rng.integers(0, len(CATS)))
            gts.append({"image_id": img, "category_id": CATS[label], "box": box,
                        "iscrowd": int(rng.random() < 0.1)})
            for _ in range(rng.integers(0, 3)):  # found 0-2 times, each with its own jitter: a
                # duplicate can lose the GT at IoU 0.5 and win it at a stricter threshold
                j = rng.integers(-3, 4, size=4)
                dbox = [max(0, box[0] + j[0]), max(0, box[1] + j[1]), box[2] + abs(j[2]) + 1, box[3] + abs(j[3]) + 1]
                dets.append((dbox, float(next(s)), label))
        for _ in range(rng.integers(0, 3)):  # false positives
            x0, y0 = rng.integers(0, 40), rng.integers(0, 28)
            dets.append(([x0, y0, x0 + 8, y0 + 8], float(next(s)), int(rng.integers(0, len(CATS)))))
        preds.append(make_prediction(img, SIZE, dets))
    return gts, preds


def _coco(gts, preds, copies: list[int]):
    """The dataset with image i repeated copies[i] times (new image and annotation ids)."""
    images, anns, dup_preds, new_id = {}, [], [], 0
    for i, n in enumerate(copies):
        for _ in range(n):
            new_id += 1
            images[new_id] = SIZE
            anns += [dict(g, image_id=new_id) for g in gts if g["image_id"] == i + 1]
            dup_preds.append(dict(preds[i], image_id=new_id))
    anns = [dict(a, id=k + 1) for k, a in enumerate(anns)]
    coco = make_coco(images, CATS, anns)
    return coco, predictions_to_coco_results(dup_preds, list(CATS))


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("seed", range(3))
def test_all_ones_weights_equal_pycocotools_and_olrp(seed, iou_type):
    gts, preds = _random_case(seed)
    coco, results = _coco(gts, preds, [1] * len(preds))
    ev = IE.image_eval(run_cocoeval(coco, results, iou_type))
    metrics = evaluate_results(coco, results, iou_types=(iou_type,))
    ones = np.ones((1, ev.num_images))
    assert IE.ap(ev, ones)[0] == pytest.approx(metrics[f"{iou_type}/AP"], abs=1e-12)
    assert IE.olrp(ev, ones)[0] == pytest.approx(metrics[f"{iou_type}/oLRP"], abs=1e-12)


def test_a_duplicate_that_only_matches_at_stricter_thresholds_counts():
    """A (score 0.9) overlaps the GT at IoU 0.6, B (0.8) at 0.8: at 0.65–0.8 A fails and B takes
    the GT. pycocotools: 3 thresholds at precision 1, 4 at 0.5, 3 at 0 -> AP 50."""
    gt = [{"image_id": 1, "category_id": 1, "box": [0, 0, 20, 10]}]
    pred = make_prediction(1, SIZE, [([0, 0, 20, 6], 0.9, 0), ([0, 0, 20, 8], 0.8, 0)])
    coco, results = make_coco({1: SIZE}, (1,), gt), predictions_to_coco_results([pred], [1])
    ev = IE.image_eval(run_cocoeval(coco, results, "bbox"))
    expected = evaluate_results(coco, results, iou_types=("bbox",))["bbox/AP"]
    assert expected == pytest.approx(50.0) and IE.ap(ev, np.ones((1, 1)))[0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("seed", range(4))
def test_integer_weights_equal_a_literally_resampled_dataset(seed, iou_type):
    gts, preds = _random_case(seed)
    ev = IE.image_eval(run_cocoeval(*_coco(gts, preds, [1] * len(preds)), iou_type))
    rng = np.random.default_rng(100 + seed)
    weights = rng.multinomial(len(preds), np.full(len(preds), 1 / len(preds)), size=4)  # [4, I]
    got_ap, got_olrp = IE.ap(ev, weights), IE.olrp(ev, weights)
    for b, copies in enumerate(weights):
        metrics = evaluate_results(*_coco(gts, preds, list(copies)), iou_types=(iou_type,))
        assert got_ap[b] == pytest.approx(metrics[f"{iou_type}/AP"], abs=1e-12)
        assert got_olrp[b] == pytest.approx(metrics[f"{iou_type}/oLRP"], abs=1e-12)


def test_save_load_round_trip_and_empty_results(tmp_path):
    gts, preds = _random_case(0)
    coco, results = _coco(gts, preds, [1] * len(preds))
    evs = {t: IE.image_eval(run_cocoeval(coco, results, t)) for t in ("segm", "bbox")}
    back = IE.load(IE.save(evs, tmp_path / "per_image.npz"))
    assert set(back) == {"segm", "bbox"}
    for t in evs:
        for field in IE.ImageEval.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(back[t], field), getattr(evs[t], field))
    none = IE.image_eval(run_cocoeval(coco, [], "segm"))
    ones = np.ones((2, none.num_images))
    assert list(IE.ap(none, ones)) == [0.0, 0.0] and list(IE.olrp(none, ones)) == [100.0, 100.0]
    with pytest.raises(ValueError, match="one per image"):
        IE.ap(none, np.ones((1, 3)))


def test_first_reaching_equals_pycocotools_searchsorted_on_recall():
    rng = np.random.default_rng(0)
    for _ in range(20):
        npig = rng.integers(1, 5000, size=6).astype(np.float64)  # [b]
        steps = rng.integers(0, 3, size=(6, 10, 300))  # TP increments per rank
        tp = np.minimum(np.cumsum(steps, axis=-1), npig[:, None, None].astype(np.int64)).astype(np.int32)
        got = IE._first_reaching(tp, npig)
        for b in range(6):
            for t in range(10):
                rc = tp[b, t] / npig[b]
                assert (got[b, t] == np.searchsorted(rc, IE.REC_THRS, side="left")).all()
