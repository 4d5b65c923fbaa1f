import numpy as np
import pytest
import torch
from dataclasses import replace

from assigners import MaskIntegrals
from pipeline.config import DataConfig
from pipeline.data import datasets as D
from tests.fixtures.loaders import iterate_batches, make_loader


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return DataConfig(synthetic_dir=str(tmp_path_factory.mktemp("syn")), synthetic_train_images=10,
                      synthetic_val_images=3, synthetic_size=96, scale=64,
                      source="coco")  # the Parquet route gives the same items: test_table_source


@pytest.fixture(scope="module")
def datasets(cfg):
    return D.build_datasets(cfg)


def test_batch_contract(datasets):
    train, val = datasets
    assert len(train) > 0 and len(val) == 3
    batch = next(iterate_batches(train, batch_size=4, seed=1, shuffle=True))
    assert isinstance(batch, D.Batch)
    assert batch.images.shape == (4, 3, 64, 64) and batch.images.dtype == torch.float32
    assert len(batch.targets) == 4
    for t in batch.targets:
        g = t["labels"].shape[0]
        assert t["boxes"].shape == (g, 4) and t["boxes"].dtype == torch.float32
        assert t["labels"].dtype == torch.int64 and (t["labels"] < train.num_classes).all()
        assert t["masks"].shape == (g, 64, 64) and t["masks"].dtype == torch.bool
        assert isinstance(t["integrals"], MaskIntegrals) and len(t["integrals"]) == g
        assert t["integrals"].image_size == (64, 64)
        assert isinstance(t["image_id"], int) and t["orig_size"] == (96, 96)
        assert t["affine"].shape == (4,) and t["window"].shape == (4,)
        # the integrals are those of the batch's masks
        if g:
            np.testing.assert_array_equal(t["integrals"].full(), MaskIntegrals.from_masks(t["masks"]).full())
            np.testing.assert_array_equal(t["integrals"].areas(), t["masks"].sum((1, 2)))
    assert val.coco is not None and val.label_to_category == [1, 2, 3, 4]
    assert val.category_names == ["solid", "ring", "cross", "bar"]


def test_val_is_resize_only_and_keeps_every_image(datasets):
    _, val = datasets
    ids = [t["image_id"] for b in iterate_batches(val, batch_size=2) for t in b.targets]
    assert sorted(ids) == sorted(val.coco.getImgIds())
    item = val[0]
    np.testing.assert_allclose(item["affine"].numpy(), [96 / 64, 0, 96 / 64, 0])
    assert torch.equal(val[0]["image"], item["image"])  # no randomness


def test_train_leaves_out_images_without_instances(cfg):
    source = D.load_split(cfg, "train")
    empty = replace(source.records[0], ann_ids=source.records[0].ann_ids[:0],
                    labels=source.records[0].labels[:0], boxes=source.records[0].boxes[:0], segmentations=())
    source.records[0] = empty
    params = D.AugmentParams(scale=64)
    assert len(D.InstanceDataset(source, params)) == len(source.records) - 1
    assert len(D.InstanceDataset(source, params, keep_empty=True)) == len(source.records)
    item = D.InstanceDataset(source, replace(params, train=False), keep_empty=True)[0]
    assert item["masks"].shape == (0, 64, 64) and len(item["integrals"]) == 0


def test_loader_workers_give_the_same_batches(datasets):
    train, _ = datasets
    plain = list(iterate_batches(train, batch_size=3, seed=5, shuffle=True, epoch=1))
    loader = make_loader(train, batch_size=3, seed=5, shuffle=True, num_workers=2)
    loader.sampler.set_epoch(1)
    workers = list(loader)
    assert len(plain) == len(workers) == -(-len(train) // 3)
    for a, b in zip(plain, workers):
        assert torch.equal(a.images, b.images)
        for ta, tb in zip(a.targets, b.targets):
            assert ta["image_id"] == tb["image_id"] and torch.equal(ta["masks"], tb["masks"])
            assert torch.equal(ta["integrals"].data, tb["integrals"].data)
    loader.sampler.set_epoch(2)
    other = next(iter(loader))
    assert not torch.equal(other.images, workers[0].images)


def test_sharded_sampler_splits_evenly():
    n = 11
    shards = [list(D.ShardedSampler(n, seed=3, shuffle=True, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    seen = {k[0] for s in shards for k in s}
    assert seen == set(range(n))
    a = D.ShardedSampler(n, seed=3)
    first = list(a)
    a.set_epoch(1)
    assert [k[0] for k in first] != [k[0] for k in a] and all(k[2] == 1 for k in a)
    assert list(D.ShardedSampler(0)) == []
    with pytest.raises(ValueError, match="rank"):
        D.ShardedSampler(4, rank=2, world_size=2)


def test_batch_to_moves_everything(datasets):
    train, _ = datasets
    batch = D.batch_to(next(iterate_batches(train, batch_size=2)), "cpu")
    t = batch.targets[0]
    assert t["integrals"].device.type == "cpu" and t["masks"].device.type == "cpu"


def test_bad_integral_source(datasets):
    train, _ = datasets
    with pytest.raises(ValueError, match="integrals must be one of"):
        D.InstanceDataset(train.source, train.params, integrals="magic")
    with pytest.raises(ValueError, match="jobs.precompute"):
        D.InstanceDataset(train.source, train.params, integrals="parquet", parquet_dir="/nonexistent")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_to_cuda_keeps_counts(datasets):
    train, _ = datasets
    batch = next(iterate_batches(train, batch_size=2, seed=0, shuffle=True))
    moved = D.batch_to(batch, "cuda")
    assert moved.images.is_cuda
    for cpu, gpu in zip(batch.targets, moved.targets):
        assert gpu["masks"].is_cuda and gpu["integrals"].device.type == "cuda"
        boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0], [10.5, 3.5, 60.0, 40.0]])
        assert torch.equal(gpu["integrals"].count(boxes.cuda()).cpu(), cpu["integrals"].count(boxes))


def test_one_split_reads_only_its_own_annotations(cfg, tmp_path):
    from pipeline.data.synthetic import generate
    root = tmp_path / "d"
    generate(str(root), 2, 1, 64, seed=0, workers=1, progress=False)
    (root / "annotations" / "train.json").write_text("{broken")
    own = replace(cfg, data_dir=str(root))
    val = D.build_dataset(own, "val")  # what evaluating a checkpoint needs
    assert len(val) == 1 and not val.params.train
    with pytest.raises(ValueError, match="train.json: broken JSON"):
        D.build_datasets(own)
