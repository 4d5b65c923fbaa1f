"""Datasets and batches: COCO-format records -> augmented samples -> `Batch`.

Batch contract (docs/design.md §3), `Batch(images, targets)`:
    images   float32 [B, 3, S, S], normalised RGB
    targets  list of B dicts:
        boxes      float32 [G, 4]  xyxy in S×S input pixels (tight boxes of the masks)
        labels     int64 [G]       contiguous 0..C-1
        masks      bool [G, S, S]
        integrals  MaskIntegrals   per-instance integral images (see `integrals` below)
        image_id   int             the dataset's own image id
        orig_size  (h, w)          of the original image
        affine     float32 [4]     (ax, bx, ay, by): input coords -> original (x = ax·u + bx)
        window     int64 [4]       crop window in original pixels (x1, y1, x2, y2)

Where the integrals come from (`DataConfig.integrals`):
    "loader"   (b) built here, in the loader workers, from the augmented S×S masks (exact,
               the official behaviour);
    "parquet"  (a) read from the precomputed tables (`jobs.precompute`): on the unaugmented
               route (evaluation, data.augment=false) the scaled tables' integrals of the
               resized S×S masks (`scaled_table`: exact, equal to "loader"); when augmenting,
               the per-instance integrals in original-image coordinates mapped with
               `with_transform(affine, window)` (close, not exact: docs/benchmarks.md).

Usage:
    train_ds, val_ds = build_datasets(cfg.data)      # synthetic data generated on first use
    sampler = ShardedSampler(len(train_ds), seed, shuffle=True, rank=r, world_size=n)
    sampler.set_epoch(epoch)                         # new order and new augmentation draws
    # training wraps these in a DataLoader (`pipeline.train.parts`) with collate=`collate`
    # evaluation: val_ds.coco (pycocotools COCO), val_ds.label_to_category (label -> the
    # dataset's category id, for results), val_ds.category_names

Every rank gets the same number of samples (the sampler pads by wrapping around), and
augmentation randomness is drawn from (seed, epoch, image index) only, so a run is reproducible
whatever the number of loader workers.
"""
from __future__ import annotations

import logging
import os
from typing import Iterator, NamedTuple

import numpy as np
import torch

from assigners import MaskIntegrals
from pipeline.data.augment import AugmentParams, Sample, transform
from pipeline.data.coco import CocoDataset, ImageRecord, instance_rles, load_checked_image, load_coco
from pipeline.data.instance_table import InstanceStore, region_integral
from pipeline.data.scaled_table import integral_tables
from pipeline.data.synthetic import ensure_synthetic
from pipeline.data.table_source import TableSource

INTEGRAL_SOURCES = ("loader", "parquet")
SOURCES = ("parquet", "coco")  # DataConfig.source: the precomputed tables, or the COCO JSON itself
BAD_IMAGE = "bad_image"  # key of the stand-in for a sample whose image could not be read
log = logging.getLogger(__name__)
SPLITS = ("train", "val")


class Batch(NamedTuple):
    images: torch.Tensor  # float32 [B, 3, S, S]
    targets: list[dict]
    bad_images: int = 0  # training samples left out: their image could not be read


class InstanceDataset:
    """Map-style dataset over image records; a torch DataLoader can use it directly.

    `dataset[key]` with key = index or (index, seed, epoch); the training pipeline draws its
    randomness from (seed, epoch, index).
    """

    def __init__(self, source: CocoDataset | TableSource, params: AugmentParams, integrals: str = "loader",
                 parquet_dir: str | None = None, keep_empty: bool | None = None):
        if integrals not in INTEGRAL_SOURCES:
            raise ValueError(f"integrals must be one of {INTEGRAL_SOURCES}, got {integrals!r}")
        # the tables integrals="parquet" reads (checked here): the scaled ones when not augmenting
        self.store_dir = integral_tables(parquet_dir, params.scale, params.train) if integrals == "parquet" else None
        self.source = source
        self.params = params
        self.integrals = integrals
        self.parquet_dir = parquet_dir
        # training skips images without ground truth (mmdetection's filter_empty_gt); evaluation keeps them
        keep_empty = (not params.train) if keep_empty is None else keep_empty
        counts = source.instance_counts  # [N] per image of the source
        self._positions = np.arange(len(counts)) if keep_empty else np.flatnonzero(counts > 0)
        self.image_ids: np.ndarray = source.image_ids[self._positions]  # [len(self)] int64
        self._store: InstanceStore | None = None  # opened lazily, once per worker process

    # evaluation helpers ------------------------------------------------------------------
    @property
    def coco(self):
        return self.source.coco

    @property
    def label_to_category(self) -> list[int]:
        return self.source.label_to_category

    @property
    def category_names(self) -> list[str]:
        return self.source.category_names

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    # dataset protocol --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._positions)

    def record(self, index: int) -> ImageRecord:
        return self.source.records[int(self._positions[index])]

    def __getitem__(self, key) -> dict:
        index, seed, epoch = (key, 0, 0) if isinstance(key, (int, np.integer)) else key
        record = self.record(int(index))
        rng = np.random.default_rng([seed, epoch, int(index)]) if self.params.train else None
        try:
            image = load_checked_image(record.path, record.image_id, record.height, record.width)
        except ValueError as e:
            if not self.params.train:  # evaluation needs every image: its numbers would change
                raise
            # gone bad since the precompute checked it (storage): this sample only; counted per batch
            log.warning("skipping a training sample: %s", e)
            return {BAD_IMAGE: record.path}
        sample = transform(image, instance_rles(record), record.labels, record.boxes, self.params, rng)
        return self._item(record, sample)

    def _item(self, record: ImageRecord, sample: Sample) -> dict:
        if self.integrals == "loader":
            integrals = integrals_from_sample(sample)
        else:
            if self._store is None:
                self._store = InstanceStore(self.store_dir)
            integrals = self._store.integrals(record.image_id, expected=len(record)).select(
                torch.from_numpy(sample.keep))
            if self.params.train:  # original-image integrals, mapped through the augmentation
                integrals = integrals.with_transform(torch.from_numpy(sample.affine),
                                                     torch.from_numpy(sample.window))
        return {
            "image": torch.from_numpy(sample.image),
            "boxes": torch.from_numpy(sample.boxes),
            "labels": torch.from_numpy(sample.labels),
            "masks": torch.from_numpy(sample.masks),
            "integrals": integrals,
            "image_id": int(record.image_id),
            "orig_size": sample.orig_size,
            "affine": torch.from_numpy(sample.affine),
            "window": torch.from_numpy(sample.window),
        }

    def __getstate__(self):  # the memory-mapped store is reopened in each worker
        state = dict(self.__dict__)
        state["_store"] = None
        return state


def integrals_from_sample(sample: Sample) -> MaskIntegrals:
    """MaskIntegrals of the augmented masks, with each region = the instance's tight box.

    Same result as `MaskIntegrals.from_masks(masks)`, without searching for the regions again.
    """
    s = sample.masks.shape[-1]
    regions, origins = [], []
    for mask, box in zip(sample.masks, sample.boxes.astype(np.int64)):
        x0, y0, x1, y1 = (int(v) for v in box)
        regions.append(torch.from_numpy(region_integral(mask[y0:y1, x0:x1])))  # [h+1, w+1]
        origins.append((y0, x0))
    return MaskIntegrals.from_regions(regions, origins, (s, s))  # lookup tables built here, off the step


def collate(items: list[dict]) -> Batch:
    """Stack the samples; samples whose image could not be read are left out and counted."""
    good = [it for it in items if BAD_IMAGE not in it]
    if not good:
        raise ValueError("every image of a batch is unreadable: " + ", ".join(it[BAD_IMAGE] for it in items))
    images = torch.stack([it.pop("image") for it in good])  # [B', 3, S, S]
    return Batch(images=images, targets=good, bad_images=len(items) - len(good))


def batch_to(batch: Batch, device: torch.device | str) -> Batch:
    """Move images and every tensor of the targets (integrals included) to `device`."""
    targets = []
    for t in batch.targets:
        moved = {}
        for k, v in t.items():
            moved[k] = v.to(device) if isinstance(v, (torch.Tensor, MaskIntegrals)) else v
        targets.append(moved)
    return Batch(images=batch.images.to(device), targets=targets, bad_images=batch.bad_images)


class ShardedSampler:
    """Yields (index, seed, epoch) keys: a per-epoch permutation, split evenly over ranks.

    Like DistributedSampler, the order is padded by wrapping around so that every rank gets
    ceil(N / world_size) items (Ray Train's report is a barrier: ranks must agree on steps).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.world_size) if self.n else 0

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        if self.n == 0:
            return iter(())
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        total = len(self) * self.world_size
        order = np.resize(order, total)  # wraps around to pad
        return ((int(i), self.seed, self.epoch) for i in order[self.rank::self.world_size])


# --- building from the config ------------------------------------------------------------------

def dataset_dir(data_cfg) -> str:
    """The dataset root: `data_cfg.data_dir`, or the synthetic dataset (generated on first use)."""
    return data_cfg.data_dir if data_cfg.data_dir else ensure_synthetic(data_cfg)


def split_paths(data_cfg, split: str) -> tuple[str, str]:
    """(annotation JSON, image root) of a split; `image_root` may contain `{split}`."""
    root = dataset_dir(data_cfg)
    json_rel = data_cfg.train_json if split == "train" else data_cfg.val_json
    return os.path.join(root, json_rel), os.path.join(root, data_cfg.image_root.format(split=split))


def check_paths(data_cfg) -> None:
    """A clear error for a dataset that is not where the config says, before any work starts
    (the built-in synthetic data is generated on first use and needs no check)."""
    if not data_cfg.data_dir:
        return
    if not os.path.isdir(data_cfg.data_dir):
        raise ValueError(f"data.data_dir={data_cfg.data_dir!r} is not a directory; give a COCO-format "
                         "dataset (annotations/train.json, annotations/val.json, images/) or leave it "
                         "unset for the built-in synthetic data")
    for split in SPLITS:
        json_path, image_root = split_paths(data_cfg, split)
        if not os.path.isfile(json_path):
            key = "train_json" if split == "train" else "val_json"
            raise ValueError(f"data.data_dir={data_cfg.data_dir!r}: the {split} annotations {json_path} "
                             f"do not exist (set data.{key} to the file's path inside data_dir)")
        if not os.path.isdir(image_root):
            raise ValueError(f"data.data_dir={data_cfg.data_dir!r}: the {split} images folder {image_root} "
                             "does not exist (set data.image_root; it may contain {split})")


def parquet_split_dir(data_cfg, split: str) -> str:
    """Where the precomputed tables of a split live: `parquet_dir/<split>` (a path or a URI)."""
    root = data_cfg.parquet_dir or os.path.join(dataset_dir(data_cfg), "parquet")
    base, _, query = root.partition("?")  # s3://bucket/prefix?endpoint_override=…: options stay last
    return os.path.join(os.path.expanduser(base), split) + (f"?{query}" if query else "")


def load_split(data_cfg, split: str) -> CocoDataset:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    json_path, image_root = split_paths(data_cfg, split)
    return load_coco(json_path, image_root, skip_invalid=data_cfg.skip_invalid,
                     verify_images=data_cfg.verify_images)


def load_source(data_cfg, split: str) -> CocoDataset | TableSource:
    """A split as `data_cfg.source` says: its precomputed tables (made by `jobs.precompute`, or by
    the training driver on first use) or its COCO JSON, parsed here."""
    if data_cfg.source not in SOURCES:
        raise ValueError(f"data.source must be one of {SOURCES}, got {data_cfg.source!r}")
    if data_cfg.source == "coco":
        return load_split(data_cfg, split)
    return TableSource(parquet_split_dir(data_cfg, split), split_paths(data_cfg, split)[1])


def augments(data_cfg, split: str) -> bool:
    """Whether a split's samples are augmented: training's, when `data_cfg.augment`."""
    return split == "train" and data_cfg.augment


def build_dataset(data_cfg, split: str) -> InstanceDataset:
    """One split's dataset: "train" augments (when `data_cfg.augment`) and leaves out images
    without annotations; "val" is resize-only and keeps every image."""
    train = split == "train"
    params = AugmentParams(scale=data_cfg.scale, train=augments(data_cfg, split),
                           min_box_size=data_cfg.min_box_size)
    parquet = parquet_split_dir(data_cfg, split) if data_cfg.integrals == "parquet" else None
    return InstanceDataset(load_source(data_cfg, split), params, data_cfg.integrals, parquet,
                           keep_empty=not train)


def build_datasets(data_cfg) -> tuple[InstanceDataset, InstanceDataset]:
    """(train, val) datasets for a DataConfig (see `build_dataset`)."""
    return build_dataset(data_cfg, "train"), build_dataset(data_cfg, "val")
