import numpy as np

from pipeline.data.coco import decode_masks
from pipeline.data.instance_table import InstanceStore
from pipeline.data.synthetic import generate
from pipeline.report import analysis as AN
from pipeline.report.anchor_grids import input_anchors
from tests.pipeline.fixtures_data import write_tables_without_ray


def test_pairs_match_a_brute_force_maiou(tmp_path):
    generate(str(tmp_path / "d"), 3, 1, 80, seed=1, workers=1, progress=False)
    source = write_tables_without_ray(str(tmp_path / "d/annotations/train.json"), str(tmp_path / "d/images"),
                                      tmp_path / "pq")
    store = InstanceStore(str(tmp_path / "pq"))
    scale = 64
    iou, maiou = AN.iou_maiou_pairs(store, scale)
    anchors, _ = input_anchors("atss", scale)
    ref_iou, ref_maiou = [], []
    for r in source.records:
        masks = decode_masks(r)  # [G, 80, 80] original frame
        f = 80 / scale
        for m, box in zip(masks, r.boxes):
            gt = box / f  # network frame
            for a in anchors.numpy().astype(np.float64):
                iw = max(0.0, min(a[2], gt[2]) - max(a[0], gt[0]))
                ih = max(0.0, min(a[3], gt[3]) - max(a[1], gt[1]))
                inter = iw * ih
                area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (gt[2] - gt[0]) * (gt[3] - gt[1])
                union = area_a + area_b - inter
                if inter / union <= 0:
                    continue
                # the anchor mapped to the original frame, corners rounded half to even, clamped
                x1, y1, x2, y2 = (int(np.clip(np.round(v * f), 0, 80)) for v in a)
                hit = m[y1:y2, x1:x2].sum() / (f * f)  # original pixels -> network-frame area
                mob = (m.sum() / (f * f)) / area_b
                ref_iou.append(inter / union)
                ref_maiou.append(hit / mob / union)
    np.testing.assert_allclose(np.sort(iou), np.sort(ref_iou), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sort(maiou), np.sort(ref_maiou), rtol=1e-4, atol=1e-5)


def test_analyze_writes_both_figures(tmp_path):
    generate(str(tmp_path / "d"), 4, 1, 64, seed=2, workers=1, progress=False)
    write_tables_without_ray(str(tmp_path / "d/annotations/train.json"), str(tmp_path / "d/images"), tmp_path / "pq")
    summary = AN.analyze(str(tmp_path / "pq"), str(tmp_path / "out"), scale=64)
    assert summary["instances"] > 0 and summary["pairs"] > 0 and 0 <= summary["mob_below_0.5"] <= 1
    for f in summary["figures"]:
        assert (tmp_path / "out" / f.split("/")[-1]).stat().st_size > 1000
