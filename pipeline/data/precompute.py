"""Ray Data precompute: a COCO-format split -> the training tables (`pipeline.data.table_dir`):
Parquet shards of per-annotation rows (`instance_table.SCHEMA`: label, box, mask RLE, area, MOB,
region integral image) and the images table (`instance_table.IMAGE_SCHEMA`).

The only Ray Data code of the project. Steps:
1. load and validate the split (`load_coco`: bad records reported or skipped), cut its images
   into shards of `images_per_shard` (`shard-00007-of-00042.parquet`);
2. skip shards already on disk (idempotent: a shard file only ever appears complete, written to
   a temporary name, read back, validated and renamed), unless the manifest says they were
   made from other inputs or settings (then: an error, or rebuilt with `overwrite`). Each shard
   also records the plan it was made for (`PLAN_KEYS`, in its schema metadata) and its images
   (kept ones with their row counts, unreadable files): a shard left by an interrupted run
   with other settings is rewritten, and files that are not in the current plan (another
   shard count, temporary files) are removed, so a directory never mixes plans;
3. `ray.data.from_items(one item per missing shard).map(write shard)` with `num_workers`
   concurrent tasks; each task decodes each of its images (an unreadable one is reported by
   file, and its shard is written only with `skip_invalid`, without it), computes the rows,
   writes zstd Parquet with small row groups, reads it back and validates it;
4. raise on unreadable images (all of them named), else write `images.parquet` and
   `_manifest.json` and validate the directory as a whole (`InstanceStore` opens it).
`precompute_scaled` adds a finished directory's exact S×S integrals (`scaled_table`) the same way.
Writing the files inside the map tasks (rather than `Dataset.write_parquet`) is what makes the
shard names ours, hence restartable.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from tqdm import tqdm

from pipeline.data.coco import load_checked_image, load_coco
from pipeline.data.datasets import SPLITS, augments, parquet_split_dir, split_paths
from pipeline.data.instance_table import (IMAGE_SCHEMA, LAYOUTS, SCHEMA, SCHEMA_VERSION, InstanceStore,
                                          columns_to_table, image_columns, validate_table)
from pipeline.data.scaled_table import (SCALED_PLAN_KEYS, check_scale, scaled_current, scaled_dir,
                                        scaled_manifest, write_scaled_shard)
from pipeline.data.table_dir import (IMAGES_FILE, INFO_METADATA_KEY, PLAN_METADATA_KEY, check_manifest,
                                     fingerprint, plan_json, read_manifest, remove_unplanned, shard_info,
                                     shard_name, tables_current, write_manifest, write_validated)
from pipeline.ray_utils import one_cluster, ray_session
from pipeline.storage import is_uri


@dataclass
class PrecomputeResult:
    out_dir: str
    shards: int
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    rows: int = 0  # instances in the whole directory
    rows_written: int = 0
    bytes: int = 0  # Parquet bytes of the whole directory
    seconds: float = 0.0  # wall time of the Ray part (what the throughput is measured on)
    validation: str = ""  # what loading the split dropped (pipeline.data.coco.ValidationReport.summary)
    bad_images: list[str] = field(default_factory=list)  # unreadable files skipped (skip_invalid)
    scaled: dict[int, "PrecomputeResult"] = field(default_factory=dict)  # S -> its scaled tables

    @property
    def instances_per_second(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0


def _write_shard(item: dict, out_dir: str, image_root: str, layout: str, cat_to_label: dict[int, int],
                 plan: str, skip_invalid: bool) -> dict:
    """Ray Data map task: one shard of images -> a validated Parquet file recording `plan`.

    Every image is decoded once, here: an unreadable one is reported by file (`info["bad"]`);
    its shard is then only written when `skip_invalid` (without that image)."""
    start = time.perf_counter()
    images, anns_per_image = pickle.loads(item["payload"])
    cols: dict[str, list] = {f.name: [] for f in SCHEMA}
    info: dict[str, list] = {"kept": [], "bad": []}  # kept: [image id, rows]; bad: [file, why]
    for image, anns in zip(images, anns_per_image):
        try:
            load_checked_image(os.path.join(image_root, image["file_name"]), image["id"],
                               image["height"], image["width"])
        except ValueError as e:
            info["bad"].append([image["file_name"], str(e)])
            continue
        for k, v in image_columns(image, anns, cat_to_label, layout).items():
            cols[k].extend(v)
        info["kept"].append([image["id"], len(anns)])
    out = {"shard": item["shard"], "rows": 0, "bytes": 0, "info": json.dumps(info)}
    if info["bad"] and not skip_invalid:
        return out
    table = columns_to_table(cols)
    table = table.replace_schema_metadata({**table.schema.metadata, PLAN_METADATA_KEY: plan.encode(),
                                           INFO_METADATA_KEY: out["info"].encode()})
    final = os.path.join(out_dir, item["name"])
    write_validated(table, final, lambda t, where: validate_table(
        t, where, expected_rows=sum(rows for _, rows in info["kept"])))
    return {**out, "rows": table.num_rows, "bytes": os.path.getsize(final),
            "seconds": time.perf_counter() - start}


def precompute(json_path: str, image_root: str, out_dir: str, *, layout: str = "rle",
               images_per_shard: int = 64, num_workers: int = 2, skip_invalid: bool = False,
               overwrite: bool = False, progress: bool = True, shutdown_ray: bool = True) -> PrecomputeResult:
    """Write (or complete) the Parquet tables of one COCO-format split into `out_dir`.

    Ray is started only when a shard is missing; a cluster this call started is shut down at
    the end unless `shutdown_ray` is False (the caller then shuts it down). Unreadable images
    are a ValueError naming every such file (without `skip_invalid`) after all shards ran.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if images_per_shard < 1 or num_workers < 1:
        raise ValueError(f"images_per_shard and num_workers must be >= 1, got {images_per_shard}, {num_workers}")
    source = load_coco(json_path, image_root, skip_invalid=skip_invalid)
    images = source.coco.dataset["images"]  # dataset order, as source.records
    n = max(1, -(-len(images) // images_per_shard))
    chunks = [images[i * images_per_shard:(i + 1) * images_per_shard] for i in range(n)]
    names = [shard_name(i, n) for i in range(n)]
    manifest = {"schema_version": SCHEMA_VERSION, "layout": layout, "images_per_shard": images_per_shard,
                "source": os.path.abspath(json_path), "source_sha1": fingerprint(json_path),
                "skip_invalid": skip_invalid, "images": len(images),
                "category_names": source.category_names, "label_to_category": source.label_to_category}
    os.makedirs(out_dir, exist_ok=True)
    check_manifest(out_dir, manifest, overwrite)
    remove_unplanned(out_dir, names)
    plan = plan_json(manifest)
    infos = [shard_info(out_dir, name, plan) for name in names]
    todo = [i for i in range(n) if infos[i] is None]
    result = PrecomputeResult(out_dir=out_dir, shards=n, skipped=[i for i in range(n) if infos[i] is not None])
    if todo:
        items = [{"shard": i, "name": names[i], "payload": pickle.dumps(
            (chunks[i], [source.coco.imgToAnns[im["id"]] for im in chunks[i]]))} for i in todo]
        _map_shards(items, _write_shard, {"out_dir": out_dir, "image_root": image_root, "layout": layout,
                                          "cat_to_label": source.category_to_label, "plan": plan,
                                          "skip_invalid": skip_invalid},
                    num_workers, shutdown_ray, progress, result, infos)
    bad = [b for info in infos for b in info["bad"]]
    if bad and not skip_invalid:
        raise ValueError(f"{json_path}: {len(bad)} unreadable image(s) under {image_root} (fix or remove "
                         f"them, or set skip_invalid): " + "; ".join(why for _, why in bad[:20]))
    result.bad_images = [f for f, _ in bad]
    result.validation = source.report.summary() + (f"; {len(bad)} unreadable image(s) skipped" if bad else "")
    manifest["shards"] = {name: sum(r for _, r in info["kept"]) for name, info in zip(names, infos)}
    _write_image_table(out_dir, images, infos, source)
    write_manifest(out_dir, manifest)
    _check_directory(out_dir)
    result.rows = sum(manifest["shards"].values())
    result.bytes = sum(os.path.getsize(os.path.join(out_dir, s)) for s in names)
    result.written.sort()
    return result


def _write_image_table(out_dir: str, images: list[dict], infos: list[dict], source) -> None:
    """`images.parquet`: every kept image in dataset order with the place of its rows."""
    by_id = {im["id"]: im for im in images}
    cols: dict[str, list] = {f.name: [] for f in IMAGE_SCHEMA}
    for shard, info in enumerate(infos):
        first = 0
        for image_id, rows in info["kept"]:
            im = by_id[image_id]
            cols["image_id"].append(image_id)
            cols["file_name"].append(im["file_name"])
            cols["height"].append(im["height"])
            cols["width"].append(im["width"])
            cols["shard"].append(shard)
            cols["first_row"].append(first)
            cols["rows"].append(rows)
            cols["instances"].append(sum(not a.get("iscrowd", 0) for a in source.coco.imgToAnns[image_id]))
            first += rows
    table = pa.Table.from_pydict(cols, schema=IMAGE_SCHEMA)
    write_validated(table, os.path.join(out_dir, IMAGES_FILE), lambda t, where: None)


def _check_directory(out_dir: str) -> None:
    """Read every shard back (schema, contiguity per image) and check the totals."""
    store = InstanceStore(out_dir)
    expected = int(pq.read_table(os.path.join(out_dir, IMAGES_FILE), columns=["instances"])
                   .column("instances").to_numpy().sum())
    if len(store) != expected:
        raise ValueError(f"{out_dir}: {len(store)} instances on disk, expected {expected}")


def _map_shards(items: list[dict], task, task_kwargs: dict, num_workers: int, shutdown_ray: bool,
                progress: bool, result: PrecomputeResult, infos: list) -> None:
    """The missing shards (`items`: shard index, name, ...), written by `num_workers` parallel Ray Data
    `task`s; `result` and `infos` (per shard: kept images and their rows, unreadable files) are filled in."""
    with ray_session(num_cpus=num_workers, shutdown=shutdown_ray):
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours below
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        start = time.perf_counter()
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map(
            task, fn_kwargs=task_kwargs, compute=ray.data.TaskPoolStrategy(size=num_workers), num_cpus=1)
        bar = tqdm(total=len(items), desc=f"precompute {os.path.basename(result.out_dir) or result.out_dir}",
                   unit="shard", disable=not progress)
        for row in ds.iter_rows():
            infos[int(row["shard"])] = json.loads(row["info"])
            if row["bytes"]:
                result.written.append(int(row["shard"]))
            result.rows_written += int(row["rows"])
            bar.update(1)
        bar.close()
        result.seconds = time.perf_counter() - start


def result_summary(result: PrecomputeResult) -> dict:
    d = asdict(result)
    d["instances_per_second"] = result.instances_per_second
    d["bytes_per_instance"] = result.bytes / result.rows if result.rows else 0.0
    return d


def precompute_scaled(parent_dir: str, scale: int, *, num_workers: int = 2, progress: bool = True,
                      shutdown_ray: bool = True) -> PrecomputeResult:
    """Write (or complete) the scaled tables of a finished split directory at S = `scale`
    (`pipeline.data.scaled_table`): one Ray Data task per parent shard, same shard names.

    Shards of this plan are kept; tables made from other parent tables are replaced (they are
    derived data, never edited by hand)."""
    manifest = scaled_manifest(parent_dir, scale)  # checks the scale and that the parent is finished
    names = sorted(read_manifest(parent_dir)["shards"])
    out_dir = scaled_dir(parent_dir, scale)
    os.makedirs(out_dir, exist_ok=True)
    check_manifest(out_dir, manifest, overwrite=True, keys=SCALED_PLAN_KEYS)
    remove_unplanned(out_dir, names)
    plan = plan_json(manifest, SCALED_PLAN_KEYS)
    infos = [shard_info(out_dir, name, plan) for name in names]
    todo = [i for i, info in enumerate(infos) if info is None]
    result = PrecomputeResult(out_dir=out_dir, shards=len(names),
                              skipped=[i for i, info in enumerate(infos) if info is not None])
    if todo:
        _map_shards([{"shard": i, "name": names[i]} for i in todo], write_scaled_shard,
                    {"parent_dir": parent_dir, "out_dir": out_dir, "scale": scale, "plan": plan},
                    num_workers, shutdown_ray, progress, result, infos)
    manifest["shards"] = {name: sum(r for _, r in info["kept"]) for name, info in zip(names, infos)}
    if read_manifest(out_dir) != manifest:  # a rerun with nothing to do writes nothing
        write_manifest(out_dir, manifest)
    result.rows = sum(manifest["shards"].values())
    if len(InstanceStore(out_dir)) != result.rows:  # the directory as a whole reads back
        raise ValueError(f"{out_dir}: the shards on disk do not hold the {result.rows} instances planned")
    result.bytes = sum(os.path.getsize(os.path.join(out_dir, name)) for name in names)
    result.written.sort()
    return result


def _precompute_split(data_cfg, split: str, overwrite: bool, progress: bool) -> PrecomputeResult:
    json_path, image_root = split_paths(data_cfg, split)
    return precompute(json_path, image_root, parquet_split_dir(data_cfg, split), layout=data_cfg.parquet_layout,
                      images_per_shard=data_cfg.parquet_images_per_shard, num_workers=data_cfg.precompute_workers,
                      skip_invalid=data_cfg.skip_invalid, overwrite=overwrite, progress=progress,
                      shutdown_ray=False)


def precompute_splits(data_cfg, splits=SPLITS, *, scales=(), overwrite: bool = False,
                      progress: bool = False) -> dict[str, PrecomputeResult]:
    """Write (or complete) the tables of each split of `data_cfg` into
    `parquet_split_dir(data_cfg, split)`, with its layout, shard size, workers and skip_invalid,
    and for each S in `scales` its scaled tables (`result.scaled[S]`).

    One Ray cluster serves every split: the running one, or a local one started by the first
    split that has work and shut down at the end. Split names and scales are checked before any work.
    """
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; valid: {', '.join(SPLITS)}")
    scales = [check_scale(s) for s in scales]
    out = {}
    with one_cluster():
        for split in splits:
            out[split] = _precompute_split(data_cfg, split, overwrite, progress)
            out[split].scaled = {s: precompute_scaled(out[split].out_dir, s, num_workers=data_cfg.precompute_workers,
                                                      progress=progress, shutdown_ray=False) for s in scales}
    return out


def ensure_precomputed(data_cfg, progress: bool = False) -> dict[str, str]:
    """Make sure both splits of `data_cfg` have their Parquet tables; returns split -> directory.

    Call it once in the driver before training or evaluating from the tables (`data.source =
    "parquet"`, or `integrals = "parquet"`): splits whose tables are current (`tables_current`,
    no JSON parsed) are left alone; the others are precomputed with the running Ray cluster, or a
    local one started for the duration. With `integrals = "parquet"`, the unaugmented splits also
    get their scaled tables at `data_cfg.scale` (`scaled_current`: from the manifests alone).
    """
    settings = {"layout": data_cfg.parquet_layout, "images_per_shard": data_cfg.parquet_images_per_shard,
                "skip_invalid": data_cfg.skip_invalid}
    dirs = {split: parquet_split_dir(data_cfg, split) for split in SPLITS}
    todo = [s for s in SPLITS if not tables_current(dirs[s], split_paths(data_cfg, s)[0], settings)]
    with one_cluster():
        for split in todo:
            _precompute_split(data_cfg, split, overwrite=False, progress=progress)
        for split in SPLITS:
            if (data_cfg.integrals == "parquet" and not augments(data_cfg, split)
                    and not is_uri(dirs[split])  # tables behind a URI are made elsewhere (`tables_current`)
                    and not scaled_current(dirs[split], data_cfg.scale)):
                precompute_scaled(dirs[split], data_cfg.scale, num_workers=data_cfg.precompute_workers,
                                  progress=progress, shutdown_ray=False)
    return dirs
