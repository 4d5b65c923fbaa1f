"""The Parquet route (`data.source = "parquet"`) against the JSON route: same records, samples,
augmentation draws, assignments and AP; unreadable images met by the precompute, by file."""
import json
import os
import shutil

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster (notes/ecosystem §8)

import numpy as np
import pytest
import torch

from assigners import ASSIGNERS
from pipeline.data import precompute as P
from pipeline.data.augment import AugmentParams
from pipeline.data.coco import decode_masks, load_coco
from pipeline.data.datasets import BAD_IMAGE, InstanceDataset, collate
from pipeline.data.synthetic import generate
from pipeline.data.table_source import TableSource
from pipeline.eval.coco_eval import evaluate_per_image
from pipeline.report.anchor_grids import input_anchors

SIZE = 96


def _with_crowd_and_shuffled_order(json_path: str) -> None:
    """A crowd region, annotations out of image order and ids out of file order: what the
    tables must reproduce for COCOeval to give the same numbers."""
    with open(json_path) as f:
        data = json.load(f)
    anns = data["annotations"][::-1]
    anns[1]["iscrowd"] = 1
    for k, a in enumerate(anns):
        a["id"] = 1000 - 7 * k if k % 2 else 5 + k
    data["annotations"] = anns
    data["images"].append({"id": 999, "file_name": data["images"][0]["file_name"],
                           "height": SIZE, "width": SIZE})  # an image without annotations
    with open(json_path, "w") as f:
        json.dump(data, f)


@pytest.fixture(scope="module")
def routes(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("routes")
    generate(str(root), 8, 2, SIZE, seed=4, workers=1, progress=False)
    json_path, image_root = str(root / "annotations" / "train.json"), str(root / "images")
    _with_crowd_and_shuffled_order(json_path)
    P.precompute(json_path, image_root, str(root / "pq"), images_per_shard=3, progress=False)
    return load_coco(json_path, image_root), TableSource(str(root / "pq"), image_root), root


def test_records_equal_the_json_route(routes):
    coco, tables, _ = routes
    np.testing.assert_array_equal(tables.image_ids, coco.image_ids)
    np.testing.assert_array_equal(tables.instance_counts, coco.instance_counts)
    assert (tables.label_to_category, tables.category_names) == (coco.label_to_category, coco.category_names)
    assert 0 in tables.instance_counts and len(tables.records) == len(coco.records) == 9
    for a, b in zip(coco.records, (tables.records[i] for i in range(len(tables.records)))):
        assert (a.image_id, a.path, a.height, a.width) == (b.image_id, b.path, b.height, b.width)
        for x, y in ((a.ann_ids, b.ann_ids), (a.labels, b.labels), (a.boxes, b.boxes)):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(decode_masks(a), decode_masks(b))


def test_samples_draws_and_assignments_equal_the_json_route(routes):
    coco, tables, _ = routes
    params = AugmentParams(scale=64, train=True)
    a, b = InstanceDataset(coco, params), InstanceDataset(tables, params)
    anchors, per_level = input_anchors("atss", 64)
    assign = ASSIGNERS["atss_maiou"]
    positives = 0
    assert len(a) == len(b) == 8  # the image without annotations is left out of training
    for key in [(i, 5, epoch) for epoch in (0, 1) for i in range(len(a))]:
        x, y = a[key], b[key]
        assert x["image_id"] == y["image_id"]
        for k in ("image", "boxes", "labels", "masks", "affine", "window"):
            assert torch.equal(x[k], y[k]), k
        assigned = [assign(t["boxes"], t["masks"], anchors, per_level, t["integrals"]) for t in (x, y)]
        assert torch.equal(*assigned)
        positives += int((assigned[0] >= 0).sum())
    assert positives > 0


def _noisy_detections(coco, seed: int) -> list[dict]:
    """Detections made from the ground truth, jittered, a third of them with a wrong class, with
    scores that tie now and then."""
    rng = np.random.default_rng(seed)
    out = []
    categories = sorted(coco.cats)
    for ann in coco.dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        dx, dy = rng.normal(0, 2, 2)
        rle = coco.annToRLE(ann)
        wrong = rng.random() < 1 / 3
        out.append({"image_id": ann["image_id"],
                    "category_id": int(rng.choice(categories)) if wrong else ann["category_id"],
                    "bbox": [x + dx, y + dy, w, h], "score": float(rng.integers(1, 5)) / 5,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"]}})
    return out


def test_ground_truth_from_the_tables_gives_the_same_ap(routes):
    coco, tables, _ = routes
    assert sum(a["iscrowd"] for a in tables.coco.dataset["annotations"]) == 1
    detections = _noisy_detections(coco.coco, seed=0)
    json_route, _ = evaluate_per_image(coco.coco, [dict(d) for d in detections])
    table_route, _ = evaluate_per_image(tables.coco, [dict(d) for d in detections])
    assert json_route == table_route and 0 < json_route["segm/AP"] < 100 and 0 < json_route["bbox/AP"] < 100


def test_tables_behind_a_uri_read_the_same(routes):
    _, tables, root = routes
    by_uri = TableSource(f"file://{root / 'pq'}", tables.image_root)
    np.testing.assert_array_equal(by_uri.records[3].boxes, tables.records[3].boxes)
    with pytest.raises(ValueError, match="jobs.precompute"):
        TableSource(str(root / "nowhere"), tables.image_root)


def test_tables_in_an_object_store_read_the_same(routes, monkeypatch):
    """s3:// through a real S3 API (moto's server on 127.0.0.1), the split dir built from the config."""
    import boto3
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    from pipeline.config import DataConfig
    from pipeline.data.datasets import parquet_split_dir

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    _, tables, root = routes
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1").create_bucket(Bucket="tables")
        options = f"?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        fs, _ = pafs.FileSystem.from_uri(f"s3://tables{options}")
        pafs.copy_files(str(root / "pq"), "tables/coco/train", destination_filesystem=fs)
        uri = parquet_split_dir(DataConfig(parquet_dir=f"s3://tables/coco{options}"), "train")
        remote = TableSource(uri, tables.image_root)
        np.testing.assert_array_equal(remote.image_ids, tables.image_ids)
        for i in (0, 4, 8):
            np.testing.assert_array_equal(remote.records[i].ann_ids, tables.records[i].ann_ids)
        theirs = tables.coco.dataset["annotations"]  # COCOeval has added its own keys to these
        assert remote.coco.dataset["annotations"] == [{k: a[k] for k in mine} for a, mine in
                                                      zip(theirs, remote.coco.dataset["annotations"])]
    finally:
        server.stop()


def _truncate(path: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def test_unreadable_image_is_reported_by_the_precompute(routes, tmp_path):
    _, tables, root = routes
    shutil.copytree(root / "images", tmp_path / "images")
    json_path = str(root / "annotations" / "train.json")
    bad = os.path.relpath(tables.records[2].path, tables.image_root)
    _truncate(str(tmp_path / "images" / bad))
    with pytest.raises(ValueError, match=f"1 unreadable image.*{bad}.*cannot decode"):
        P.precompute(json_path, str(tmp_path / "images"), str(tmp_path / "pq"), images_per_shard=3,
                     progress=False)
    skipped = P.precompute(json_path, str(tmp_path / "images"), str(tmp_path / "pq"), images_per_shard=3,
                           skip_invalid=True, progress=False)
    assert skipped.bad_images == [bad] and "1 unreadable image(s) skipped" in skipped.validation
    kept = TableSource(str(tmp_path / "pq"), str(tmp_path / "images"))
    assert tables.records[2].image_id not in kept.image_ids and len(kept.image_ids) == 8


def test_image_gone_bad_later_fails_only_its_sample(routes, tmp_path):
    _, tables, root = routes
    shutil.copytree(root / "images", tmp_path / "images")
    moved = TableSource(tables.uri, str(tmp_path / "images"))
    train = InstanceDataset(moved, AugmentParams(scale=64, train=True))
    _truncate(train.record(1).path)
    items = [train[(i, 0, 0)] for i in range(3)]
    assert items[1] == {BAD_IMAGE: train.record(1).path}
    batch = collate(items)
    assert batch.images.shape[0] == 2 and batch.bad_images == 1
    with pytest.raises(ValueError, match="cannot decode"):  # evaluation needs every image
        InstanceDataset(moved, AugmentParams(scale=64, train=False))[int(np.flatnonzero(
            moved.image_ids == train.image_ids[1])[0])]
