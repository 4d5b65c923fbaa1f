import json
import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster (notes/ecosystem §8)

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch

from assigners import MaskIntegrals
from pipeline.data import precompute as P
from pipeline.data import table_dir as T
from pipeline.data.augment import AugmentParams
from pipeline.data.coco import decode_masks, load_coco
from pipeline.data.datasets import InstanceDataset
from pipeline.data.instance_table import SCHEMA, InstanceStore, validate_table
from pipeline.data.scaled_table import scaled_current, scaled_dir
from pipeline.data.synthetic import generate


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    generate(str(root), 10, 2, 96, seed=2, workers=1, progress=False)
    return str(root / "annotations" / "train.json"), str(root / "images")


@pytest.fixture(scope="module")
def tables(ray_cluster, synth, tmp_path_factory):
    out = {}
    for layout in ("integral", "rle"):
        d = str(tmp_path_factory.mktemp(layout))
        out[layout] = (d, P.precompute(*synth, d, layout=layout, images_per_shard=4, num_workers=2, progress=False))
    return out


def test_tables_hold_every_instance_and_its_integral(synth, tables):
    source = load_coco(*synth)
    total = sum(len(r) for r in source.records)
    for layout, (d, result) in tables.items():
        assert result.rows == result.rows_written == total and result.shards == 3
        assert result.written == [0, 1, 2] and result.bytes > 0
        store = InstanceStore(d)
        assert store.layout == layout and len(store) == total
        for r in source.records:
            masks = torch.from_numpy(decode_masks(r))
            got = store.integrals(r.image_id, expected=len(r))
            assert got.image_size == (r.height, r.width)
            np.testing.assert_array_equal(got.full(), MaskIntegrals.from_masks(masks).full())
            np.testing.assert_array_equal(got.areas(), masks.sum((1, 2)))


def test_columns_match_the_annotations(synth, tables):
    source = load_coco(*synth)
    table = InstanceStore(tables["integral"][0]).table
    assert table.schema.equals(SCHEMA, check_metadata=False)
    anns = source.coco.anns
    for row in table.to_pylist():
        ann = anns[row["ann_id"]]
        assert row["category_id"] == ann["category_id"] and row["area"] == ann["area"]
        x, y, w, h = ann["bbox"]
        assert row["box"] == pytest.approx([x, y, x + w, y + h])
        assert row["mob"] == pytest.approx(ann["area"] / (w * h), rel=1e-6)
        assert source.label_to_category[row["label"]] == row["category_id"]


def test_rerun_is_idempotent(synth, tables, tmp_path):
    d, _ = tables["integral"]
    again = P.precompute(*synth, d, layout="integral", images_per_shard=4, progress=False)
    assert again.written == [] and again.skipped == [0, 1, 2] and again.rows > 0
    # a lost shard is the only one redone
    work = str(tmp_path / "t")
    P.precompute(*synth, work, layout="rle", images_per_shard=4, progress=False)
    os.remove(os.path.join(work, T.shard_name(1, 3)))
    redo = P.precompute(*synth, work, layout="rle", images_per_shard=4, progress=False)
    assert redo.written == [1] and redo.skipped == [0, 2]
    with pytest.raises(ValueError, match="layout differ"):
        P.precompute(*synth, work, layout="integral", images_per_shard=4, progress=False)
    fresh = P.precompute(*synth, work, layout="integral", images_per_shard=4, overwrite=True, progress=False)
    assert fresh.written == [0, 1, 2]
    assert json.load(open(os.path.join(work, T.MANIFEST)))["layout"] == "integral"


def _interrupt(out_dir, lost_shard):
    """What a run killed before its end leaves: no manifest, and one shard not written."""
    os.remove(os.path.join(out_dir, T.MANIFEST))
    os.remove(os.path.join(out_dir, lost_shard))


def test_rerun_after_an_interrupted_run_with_other_settings(synth, tmp_path):
    work = str(tmp_path / "t")
    P.precompute(*synth, work, layout="integral", images_per_shard=4, progress=False)  # 3 shards
    _interrupt(work, T.shard_name(2, 3))
    # another layout: the interrupted run's shards record their plan, so every one is redone
    redo = P.precompute(*synth, work, layout="rle", images_per_shard=4, progress=False)
    assert redo.written == [0, 1, 2] and InstanceStore(work).layout == "rle"
    _interrupt(work, T.shard_name(0, 3))
    # another shard count: the old names are not in the plan and go
    again = P.precompute(*synth, work, layout="rle", images_per_shard=5, progress=False)
    assert again.written == [0, 1] and sorted(f for f in os.listdir(work) if f.startswith("shard-")) == \
        [T.shard_name(0, 2), T.shard_name(1, 2)]
    assert len(InstanceStore(work)) == again.rows == T.verify(work)
    # a damaged manifest is named, and --overwrite rebuilds
    with open(os.path.join(work, T.MANIFEST), "w") as f:
        f.write("{half")
    with pytest.raises(ValueError, match="_manifest.json is unreadable"):
        P.precompute(*synth, work, layout="rle", images_per_shard=5, progress=False)
    fresh = P.precompute(*synth, work, layout="rle", images_per_shard=5, overwrite=True, progress=False)
    assert fresh.written == [0, 1]


def test_validation_catches_a_corrupt_shard(tables, tmp_path):
    d, _ = tables["integral"]
    table = pq.read_table(os.path.join(d, T.shard_name(0, 3)))
    area = table.column("area").to_numpy().copy()
    area[0] += 1
    i = table.schema.get_field_index("area")
    bad = table.set_column(i, table.schema.field(i), [area.tolist()])
    with pytest.raises(ValueError, match="disagree with the 'area' column"):
        validate_table(bad, "shard-x")
    with pytest.raises(ValueError, match="rows, expected 999"):
        validate_table(table, "shard-x", expected_rows=999)
    with pytest.raises(ValueError, match="schema differs"):
        validate_table(table.drop_columns(["mob"]), "shard-x")
    assert T.verify(d) == len(InstanceStore(d))


def test_parquet_integrals_map_back_exactly_without_rescaling(synth, tables):
    """(a) vs (b): with S = image size and no expand/crop, the mapping is the identity or a
    flip, so counts from the Parquet tables equal counts on the augmented masks."""
    source = load_coco(*synth)
    params = AugmentParams(scale=96, expand_prob=0.0, crop=False)
    loader = InstanceDataset(source, params, integrals="loader")
    parquet = InstanceDataset(source, params, integrals="parquet", parquet_dir=tables["rle"][0])
    rng = np.random.default_rng(0)
    flipped = 0
    for i in range(len(loader)):
        key = (i, 3, 0)
        a, b = parquet[key], loader[key]
        assert torch.equal(a["masks"], b["masks"])
        flipped += bool(a["affine"][0] < 0)
        xy = torch.from_numpy(rng.uniform(-10, 106, (50, 2)).astype(np.float32))
        wh = torch.from_numpy(rng.uniform(1, 60, (50, 2)).astype(np.float32))
        boxes = torch.cat([xy, xy + wh], 1)  # [50, 4]
        np.testing.assert_array_equal(a["integrals"].count(boxes), b["integrals"].count(boxes))
        np.testing.assert_array_equal(a["integrals"].areas(), b["integrals"].areas())
    assert flipped > 0


def test_parquet_integrals_under_full_augmentation_are_close(synth, tables):
    source = load_coco(*synth)
    params = AugmentParams(scale=64)
    loader = InstanceDataset(source, params, integrals="loader")
    parquet = InstanceDataset(source, params, integrals="parquet", parquet_dir=tables["integral"][0])
    fractions = []
    for i in range(len(loader)):
        a, b = parquet[(i, 1, 0)], loader[(i, 1, 0)]
        fa = a["integrals"].count(a["boxes"]).diagonal().double() / a["integrals"].areas().clamp(min=1)
        fb = b["integrals"].count(b["boxes"]).diagonal().double() / b["integrals"].areas().clamp(min=1)
        assert (fb == 1).all()  # (b): the box is the tight box of the very mask counted
        fractions.append(fa)
    # (a): the original mask seen through the box; thin parts that the nearest-neighbour resize
    # dropped stay outside it, so it is close to 1 but not always 1
    fractions = torch.cat(fractions)
    assert fractions.median() > 0.95 and (fractions > 0.3).all()


def test_stale_tables_are_refused(synth, tables):
    source = load_coco(*synth)
    store = InstanceStore(tables["integral"][0])
    rec = source.records[0]
    with pytest.raises(ValueError, match="re-run the precompute"):
        store.integrals(rec.image_id, expected=len(rec) + 1)
    with pytest.raises(ValueError, match="jobs.precompute"):
        InstanceStore(str(tables["integral"][0]) + "-missing")


def test_ensure_precomputed_feeds_parquet_batches(ray_cluster, tmp_path):
    from pipeline.config import DataConfig
    from pipeline.data.datasets import build_datasets
    from tests.fixtures.loaders import iterate_batches

    cfg = DataConfig(synthetic_dir=str(tmp_path / "syn"), synthetic_train_images=4, synthetic_val_images=1,
                     synthetic_size=64, scale=64, integrals="parquet", parquet_images_per_shard=2)
    dirs = P.ensure_precomputed(cfg)
    assert sorted(dirs) == ["train", "val"] and all(os.path.isdir(d) for d in dirs.values())
    made = {f: os.stat(os.path.join(dirs["train"], f)).st_mtime_ns for f in os.listdir(dirs["train"])}
    assert P.ensure_precomputed(cfg) == dirs  # current tables: recognised from the manifest, left alone
    assert made == {f: os.stat(os.path.join(dirs["train"], f)).st_mtime_ns for f in os.listdir(dirs["train"])}
    assert ray.is_initialized()  # the caller's cluster is left running
    # integrals="parquet": the unaugmented split (val) also gets its exact S×S integrals
    assert scaled_current(dirs["val"], 64) and not os.path.exists(scaled_dir(dirs["train"], 64))
    train, val = build_datasets(cfg)
    batch = next(iterate_batches(train, batch_size=2, seed=0, shuffle=True))
    for t in batch.targets:
        assert t["integrals"].affine is not None and len(t["integrals"]) == t["labels"].shape[0]
        assert (t["integrals"].areas() > 0).all()
