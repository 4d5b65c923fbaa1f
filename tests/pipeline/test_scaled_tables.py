"""Scaled tables (`pipeline.data.scaled_table`): the exact integrals of the unaugmented route,
precomputed per S from the parent tables, against the loader's own (`integrals_from_sample`)."""
import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster (notes/ecosystem §8)

import pytest
import torch

from assigners import ASSIGNERS
from jobs import precompute as precompute_job
from pipeline.data import precompute as P
from pipeline.data import table_dir as T
from pipeline.data.augment import AugmentParams, transform
from pipeline.data.coco import instance_rles, load_coco, load_image
from pipeline.data.datasets import InstanceDataset, integrals_from_sample
from pipeline.data.instance_table import InstanceStore
from pipeline.data.scaled_table import scaled_current, scaled_dir
from pipeline.data.synthetic import generate
from pipeline.report.anchor_grids import input_anchors

SCALES = (48, 160)  # a downscale that empties or drops small masks, and an upscale (images are 96²)
MASK_AWARE = [n for n, a in ASSIGNERS.items() if getattr(a.per_image, "keywords", {}).get("mask_aware")]


@pytest.fixture(scope="module")
def split(ray_cluster, tmp_path_factory):
    """A synthetic split, its parent tables ("rle" layout) and their scaled tables at SCALES."""
    root = tmp_path_factory.mktemp("syn")
    generate(str(root), 12, 1, 96, seed=4, workers=1, progress=False)
    json_path, images = str(root / "annotations" / "train.json"), str(root / "images")
    parent = str(tmp_path_factory.mktemp("tables"))
    P.precompute(json_path, images, parent, images_per_shard=5, num_workers=2, progress=False, shutdown_ray=False)
    results = {s: P.precompute_scaled(parent, s, progress=False, shutdown_ray=False) for s in SCALES}
    return load_coco(json_path, images), parent, results, (json_path, images)


def _regions(mi):
    """Every instance's (origin, size, total, integral image) and the frame: what a count reads."""
    per = [(tuple(mi.origin[g].tolist()), tuple(mi.size[g].tolist()), int(mi.total[g]),
            mi.data[mi.offset[g]:mi.offset[g] + (mi.size[g, 0] + 1) * (mi.size[g, 1] + 1)].tolist())
           for g in range(len(mi))]
    return per, mi.image_size, mi.affine, mi.window


def test_scaled_integrals_are_the_loaders_exactly(split):
    source, parent, results, _ = split
    assert MASK_AWARE and {"atss_maiou", "atss_gmaiou"} <= set(MASK_AWARE)
    dropped = 0
    for scale in SCALES:
        assert results[scale].rows == sum(len(r) for r in source.records) and results[scale].written
        store = InstanceStore(scaled_dir(parent, scale))
        anchors, per_level = input_anchors("atss", scale)
        params = AugmentParams(scale=scale, train=False)
        for r in source.records:
            sample = transform(load_image(r.path, r.image_id), instance_rles(r), r.labels, r.boxes, params)
            loader = integrals_from_sample(sample)
            full = store.integrals(r.image_id, expected=len(r))
            stored = full.select(torch.from_numpy(sample.keep))
            assert _regions(stored) == _regions(loader)
            if len(sample.keep) == len(r):  # nothing dropped: the very same buffers
                for field in ("data", "offset", "origin", "size", "total"):
                    assert torch.equal(getattr(full, field), getattr(loader, field)), field
            dropped += len(r) - len(sample.keep)
            boxes = torch.from_numpy(sample.boxes)
            for name in MASK_AWARE:
                a = ASSIGNERS[name](boxes, None, anchors, per_level, integral=stored)
                b = ASSIGNERS[name](boxes, None, anchors, per_level, integral=loader)
                assert torch.equal(a, b), (name, scale, r.image_id)
    assert dropped > 0  # the select path is exercised: the downscale drops small instances


def test_unaugmented_dataset_reads_them_and_equals_the_loader(split):
    source, parent, _, _ = split
    for scale in SCALES:
        params = AugmentParams(scale=scale, train=False)
        parquet = InstanceDataset(source, params, integrals="parquet", parquet_dir=parent)
        loader = InstanceDataset(source, params, integrals="loader")
        for i in range(len(loader)):
            a, b = parquet[i], loader[i]
            assert a["integrals"].affine is None and _regions(a["integrals"]) == _regions(b["integrals"])
    with pytest.raises(ValueError, match="--scales 64"):  # a scale never precomputed
        InstanceDataset(source, AugmentParams(scale=64, train=False), integrals="parquet", parquet_dir=parent)
    # augmented training keeps the mapped route and needs no scaled tables
    train = InstanceDataset(source, AugmentParams(scale=64), integrals="parquet", parquet_dir=parent)
    assert train[(0, 1, 0)]["integrals"].affine is not None


def _mtimes(d):
    return {f: os.stat(os.path.join(d, f)).st_mtime_ns for f in os.listdir(d)}


def test_rerun_writes_nothing_and_a_new_parent_invalidates(split, tmp_path):
    source, parent, _, (json_path, images) = split
    scaled = scaled_dir(parent, SCALES[0])
    before = _mtimes(scaled)
    again = P.precompute_scaled(parent, SCALES[0], progress=False, shutdown_ray=False)
    assert again.written == [] and again.skipped == list(range(again.shards)) and _mtimes(scaled) == before
    # new parent tables (another layout and shard size) in a copy: the scaled ones there go stale
    work = str(tmp_path / "t")
    P.precompute(json_path, images, work, images_per_shard=6, progress=False, shutdown_ray=False)
    P.precompute_scaled(work, 48, progress=False, shutdown_ray=False)
    P.precompute(json_path, images, work, layout="integral", images_per_shard=4, overwrite=True,
                 progress=False, shutdown_ray=False)
    assert not scaled_current(work, 48)
    with pytest.raises(ValueError, match="made from other tables"):
        InstanceDataset(source, AugmentParams(scale=48, train=False), integrals="parquet", parquet_dir=work)
    fresh = P.precompute_scaled(work, 48, progress=False, shutdown_ray=False)
    assert fresh.written == [0, 1, 2] and scaled_current(work, 48)
    assert sorted(f for f in os.listdir(scaled_dir(work, 48)) if f.startswith("shard-")) == \
        [T.shard_name(i, 3) for i in range(3)]  # the old plan's 2 shards of 6 images went
    assert T.verify(scaled_dir(work, 48)) == fresh.rows
    manifest = T.read_manifest(scaled_dir(work, 48))
    assert manifest["scale"] == 48 and manifest["parent"] == T.plan_json(T.read_manifest(work))


def test_bad_scales_and_missing_parents_are_clear_errors(split, tmp_path, capsys):
    _, parent, _, _ = split
    for bad in (16, 96.0, "550"):
        with pytest.raises(ValueError, match="scale must be an integer >= 32"):
            P.precompute_scaled(parent, bad, progress=False)
    with pytest.raises(ValueError, match="no finished tables to scale"):
        P.precompute_scaled(str(tmp_path), 64, progress=False)
    assert precompute_job.main(["--out", str(tmp_path), "--scales", "550,big", "--quiet"]) == 2
    assert "'big' is not an integer size S" in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # refused before any work
