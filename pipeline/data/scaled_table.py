"""Scaled instance tables: the exact integral images of the unaugmented routes, stored once per S.

Evaluation and training with `data.augment = false` resize every image to S×S and nothing else,
so the integral images their assigner needs are known in advance. `<split dir>/scaled-<S>/`
holds them: the parent's shards (same names, same `instance_table.SCHEMA`, "integral" layout),
each describing the dataset as that route sees it — image_height = image_width = S and, per
NON-crowd instance in record order, the region, box, area, MOB, RLE and integral image of the
mask resized by `augment.resize_masks` (the very code `transform(..., train=False)` runs),
with label, category_id, ann_id, bbox and ann_area copied from the parent row. A mask that the
resize empties gets a 0×0 region (its integral is the single zero); the transform drops it.

So `InstanceStore(scaled_dir(parent, S)).integrals(image_id)` is one buffer slice, equal to the
integrals the loader builds from the resized masks (`datasets.integrals_from_sample`), and the
tables are validated and read by the parent's code. They are made from the parent tables (not
the JSON) by `pipeline.data.precompute.precompute_scaled`, one Ray Data task per parent shard;
this module holds what those tasks run and the plan (`SCALED_PLAN_KEYS`) they are made for:
the scale, and the parent's own plan, so that new parent tables make them stale.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pycocotools import mask as mask_utils

from pipeline.data.augment import AugmentParams, resize_masks
from pipeline.data.instance_table import (SCHEMA, SCHEMA_VERSION, columns_to_table, region_integral,
                                          validate_table)
from pipeline.data.table_dir import (INFO_METADATA_KEY, PLAN_KEYS, PLAN_METADATA_KEY, plan_json, read_manifest,
                                     write_validated)

SCALED_PREFIX = "scaled-"
SCALED_PLAN_KEYS = ("schema_version", "scale", "parent")
COPIED = ("ann_id", "label", "category_id", "bbox", "ann_area")  # parent columns kept as they are
PARENT_COLUMNS = ["image_id", "iscrowd", "image_height", "image_width", "rle", *COPIED]


def scaled_dir(parent_dir: str, scale: int) -> str:
    return os.path.join(parent_dir, f"{SCALED_PREFIX}{scale}")


def check_scale(scale) -> int:
    """A valid network input size S (`AugmentParams`' rule), or a ValueError saying why not."""
    return AugmentParams(scale=scale, train=False).scale


def scaled_manifest(parent_dir: str, scale: int) -> dict:
    """The plan of `scaled_dir(parent_dir, scale)`, from the parent's manifest."""
    check_scale(scale)
    parent = read_manifest(parent_dir)
    if parent is None or not {"shards", *PLAN_KEYS} <= parent.keys():
        raise ValueError(f"{parent_dir}: no finished tables to scale; run `python -m jobs.precompute` first")
    return {"schema_version": SCHEMA_VERSION, "scale": scale, "parent": plan_json(parent), "layout": "integral"}


def scaled_current(parent_dir: str, scale: int) -> bool:
    """Whether the scaled tables exist and were made from the parent's current tables (both
    manifests only: no JSON parsed, no shard read)."""
    try:
        expected = scaled_manifest(parent_dir, scale)
    except ValueError:
        return False
    own = read_manifest(scaled_dir(parent_dir, scale))
    return own is not None and "shards" in own and all(own.get(k) == expected[k] for k in SCALED_PLAN_KEYS)


def integral_tables(parquet_dir: str | None, scale: int, augmented: bool) -> str:
    """The directory `integrals="parquet"` reads: the split's tables when augmenting (mapped back
    through the augmentation), else their scaled tables (exact). A clear error when it is not there."""
    if not parquet_dir:
        raise ValueError("integrals='parquet' needs parquet_dir (see `python -m jobs.precompute`)")
    if not os.path.isdir(parquet_dir):
        raise ValueError(f"integrals='parquet': {parquet_dir} does not exist; run `python -m jobs.precompute` first")
    if augmented:
        return parquet_dir
    if not scaled_current(parquet_dir, scale):
        raise ValueError(f"integrals='parquet' without augmentation reads {scaled_dir(parquet_dir, scale)}: "
                         f"missing or made from other tables; run `python -m jobs.precompute --scales {scale}` "
                         "(training and evaluation make it on first use)")
    return scaled_dir(parquet_dir, scale)


def scaled_columns(rows, scale: int) -> dict[str, list]:
    """The scaled table's columns (python lists) for one image's non-crowd parent rows."""
    cols: dict[str, list] = {f.name: [] for f in SCHEMA}
    if rows.num_rows == 0:
        return cols
    h, w = int(rows.column("image_height")[0].as_py()), int(rows.column("image_width")[0].as_py())
    rles = [{"size": [h, w], "counts": c} for c in rows.column("rle").to_pylist()]
    masks, tight = resize_masks(rles, (h, w), scale)  # bool [G, S, S], int64 [G, 4] xyxy
    encoded = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))  # [S, S, G]
    copied = {k: rows.column(k).to_pylist() for k in COPIED}
    image_id = int(rows.column("image_id")[0].as_py())
    for g, (x0, y0, x1, y1) in enumerate(tight.tolist()):
        crop = masks[g, y0:y1, x0:x1]  # [h, w]; 0×0 for an emptied mask
        area = int(crop.sum())
        box_area = (x1 - x0) * (y1 - y0)
        for k in COPIED:
            cols[k].append(copied[k][g])
        cols["image_id"].append(image_id)
        cols["instance"].append(g)
        cols["iscrowd"].append(False)
        cols["image_height"].append(scale)
        cols["image_width"].append(scale)
        cols["box"].append([float(x0), float(y0), float(x1), float(y1)])
        cols["area"].append(area)
        cols["mob"].append(area / box_area if box_area > 0 else 0.0)
        cols["rle"].append(encoded[g]["counts"])
        cols["region"].append([y0, x0, y1 - y0, x1 - x0])
        cols["integral"].append(region_integral(crop).tobytes())
    return cols


def write_scaled_shard(item: dict, parent_dir: str, out_dir: str, scale: int, plan: str) -> dict:
    """Ray Data map task: one parent shard -> its validated scaled shard, recording `plan`."""
    start = time.perf_counter()
    name = item["name"]
    table = pq.read_table(os.path.join(parent_dir, name), columns=PARENT_COLUMNS)
    table = table.filter(pc.invert(table.column("iscrowd")))
    ids = table.column("image_id").to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, len(ids)])
    cols: dict[str, list] = {f.name: [] for f in SCHEMA}
    info = {"kept": [], "bad": []}  # kept: [image id, rows], as the parent shards record it
    for first, count in zip(starts.tolist(), counts.tolist()):
        for k, v in scaled_columns(table.slice(first, count), scale).items():
            cols[k].extend(v)
        info["kept"].append([int(ids[first]), count])
    out = columns_to_table(cols)
    out = out.replace_schema_metadata({**out.schema.metadata, PLAN_METADATA_KEY: plan.encode(),
                                       INFO_METADATA_KEY: json.dumps(info).encode()})
    final = os.path.join(out_dir, name)
    write_validated(out, final, lambda t, where: validate_table(t, where, expected_rows=len(ids)))
    return {"shard": item["shard"], "rows": out.num_rows, "bytes": os.path.getsize(final),
            "info": json.dumps(info), "seconds": time.perf_counter() - start}
