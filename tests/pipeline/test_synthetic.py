import filecmp
import json
import os
from dataclasses import replace

import numpy as np
import pytest

from pipeline.config import DataConfig
from pipeline.data import scenes as SC
from pipeline.data import synthetic as S
from pipeline.data.coco import decode_masks, load_coco


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "a"
    S.generate(str(out), 40, 8, 128, seed=3, workers=2, progress=False)
    return out


def test_is_a_valid_coco_dataset_with_tight_boxes(small_set):
    for split, n in (("train", 40), ("val", 8)):
        ds = load_coco(str(small_set / "annotations" / f"{split}.json"), str(small_set / "images"),
                       verify_images=True)
        assert len(ds.records) == n and sum(ds.report.dropped.values()) == 0
        assert ds.category_names == list(S.CATEGORIES)
        for r in ds.records:
            masks = decode_masks(r)
            assert masks.reshape(len(r), -1).any(1).all()
            # visible masks of one image never overlap: occlusion is resolved
            assert (masks.sum(0) <= 1).all()
            for m, box in zip(masks, r.boxes):
                rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
                np.testing.assert_array_equal(box, [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
            areas = [ds.coco.anns[int(i)]["area"] for i in r.ann_ids]
            np.testing.assert_array_equal(areas, masks.reshape(len(r), -1).sum(1))
    train_ids = {im["id"] for im in json.load(open(small_set / "annotations/train.json"))["images"]}
    val_ids = {im["id"] for im in json.load(open(small_set / "annotations/val.json"))["images"]}
    assert not train_ids & val_ids


def test_deterministic_and_independent_of_workers(small_set, tmp_path):
    S.generate(str(tmp_path), 40, 8, 128, seed=3, workers=1, progress=False)
    for rel in ("annotations/train.json", "annotations/val.json", "images/train/000007.png",
                "images/val/000045.png"):
        assert filecmp.cmp(small_set / rel, tmp_path / rel, shallow=False), rel
    other = tmp_path / "other"
    S.generate(str(other), 3, 1, 128, seed=4, workers=1, progress=False)
    assert not filecmp.cmp(small_set / "images/train/000001.png", other / "images/train/000001.png",
                           shallow=False)


def test_mob_ratios_vary_widely():
    anns = []
    for i in range(60):
        _, masks, labels = SC.render_scene(np.random.default_rng([0, 0, i]), 256)
        for m, lab in zip(masks, labels):
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            anns.append({"area": float(m.sum()), "category_id": lab + 1,
                         "bbox": [0, 0, cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]]})
    mob = S.mob_of(anns)
    cats = np.array([a["category_id"] for a in anns])
    assert (mob < 0.5).mean() >= 0.3  # as on COCO (paper Fig. 3a)
    assert (mob > 0.8).mean() >= 0.1
    assert np.median(mob[cats == 1]) > 0.7  # solids fill their boxes
    assert np.percentile(mob[cats == 2], 90) < 0.6  # rings do not
    stats = S.mob_statistics(anns)
    assert stats["all"]["count"] == len(anns) == sum(stats[c]["count"] for c in S.CATEGORIES)
    assert min(stats["all"][k] for k in ("small", "medium", "large")) > 0
    assert "ring" in S.format_mob_table(stats)


def test_occlusion_keeps_at_least_half_of_each_object():
    occluded = 0
    for i in range(30):
        objects = SC._layout(np.random.default_rng([1, 0, i]), 128)
        for o in objects:
            vis = o.visible.sum()
            assert vis >= (1 - SC.MAX_OCCLUDED) * o.area and not (o.visible & ~o.full).any()
            occluded += vis < o.area
    assert occluded > 0


def test_ensure_synthetic_caches_by_parameters(tmp_path):
    cfg = DataConfig(synthetic_dir=str(tmp_path), synthetic_train_images=3, synthetic_val_images=1,
                     synthetic_size=64, synthetic_seed=0)
    a = S.ensure_synthetic(cfg)
    stamp = os.path.getmtime(os.path.join(a, "meta.json"))
    assert S.ensure_synthetic(cfg) == a and os.path.getmtime(os.path.join(a, "meta.json")) == stamp
    b = S.ensure_synthetic(replace(cfg, synthetic_size=96))
    assert b != a and json.load(open(os.path.join(b, "meta.json")))["size"] == 96
    # nothing half-written is left next to the finished datasets
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(a), os.path.basename(b)])


def test_bad_parameters():
    with pytest.raises(ValueError, match="size >= 32"):
        S.generate("/tmp/never", 1, 1, 8, 0)
