"""Ray Data precompute: a COCO-format split -> Parquet shards of per-instance rows
(`pipeline.data.instance_table.SCHEMA`: mask RLE, box, area, MOB, region integral image).

The only Ray Data code of the project. Steps:
1. load and validate the split (`load_coco`), cut its image records into shards of
   `images_per_shard` images (`shard-00007-of-00042.parquet`);
2. skip shards already on disk (idempotent: a shard file only ever appears complete, written to
   a temporary name, read back, validated and renamed), unless the manifest says they were
   made from other inputs or settings (then: an error, or rebuilt with `overwrite`). Each shard
   also records the plan it was made for (`PLAN_KEYS`, in its schema metadata): a shard left by
   an interrupted run with other settings is rewritten, and files that are not in the current
   plan (another shard count, temporary files) are removed, so a directory never mixes plans;
3. `ray.data.from_items(one item per missing shard).map(write shard)` with `num_workers`
   concurrent tasks; each task decodes its masks, computes the rows, writes zstd Parquet with
   small row groups, reads it back and validates it;
4. write `_manifest.json` and validate the directory as a whole (`InstanceStore` opens it).

Writing the files inside the map tasks (rather than `Dataset.write_parquet`) is what makes the
shard names ours, hence restartable.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import pyarrow.parquet as pq
import ray
from tqdm import tqdm

from pipeline.data.coco import ImageRecord, load_coco
from pipeline.data.datasets import SPLITS, parquet_split_dir, split_paths
from pipeline.data.instance_table import (LAYOUTS, SCHEMA_VERSION, InstanceStore, columns_to_table,
                                          record_columns, validate_table)
from pipeline.ray_utils import start_local_ray

MANIFEST = "_manifest.json"
# What a directory's tables depend on: the manifest's and every shard's record of its plan.
PLAN_KEYS = ("schema_version", "layout", "images_per_shard", "source_sha1", "skip_invalid", "images")
PLAN_METADATA_KEY = b"maskaware.plan"
ROW_GROUP_SIZE = 128  # small groups keep per-image filtered reads cheap (see ecosystem notes §4)
COMPRESSION = "zstd"
# Ray's object store for a cluster we start ourselves; Ray's default (30 % of RAM) is far more
# than shards of a few MB need on a shared 2-core machine.
OBJECT_STORE_BYTES = 512 * 1024**2


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

    @property
    def instances_per_second(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}.parquet"


def _fingerprint(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def ray_session(num_cpus: int | None = None, object_store_memory: int = OBJECT_STORE_BYTES,
                shutdown: bool = True):
    """Use the running Ray cluster, or start a local one (shut down at the end if `shutdown`)."""
    if ray.is_initialized():
        yield
        return
    kwargs = {"log_to_driver": False, "logging_level": logging.WARNING}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
    else:
        start_local_ray(num_cpus=num_cpus, object_store_memory=object_store_memory, **kwargs)
    try:
        yield
    finally:
        if shutdown:
            ray.shutdown()


def _plan_json(manifest: dict) -> str:
    return json.dumps({k: manifest[k] for k in PLAN_KEYS}, sort_keys=True)


def _write_shard(item: dict, out_dir: str, layout: str, label_to_category: list[int], plan: str) -> dict:
    """Ray Data map task: one shard of records -> a validated Parquet file recording `plan`."""
    start = time.perf_counter()
    records: list[ImageRecord] = pickle.loads(item["payload"])
    cols: dict[str, list] = {}
    for record in records:
        for k, v in record_columns(record, label_to_category, layout).items():
            cols.setdefault(k, []).extend(v)
    table = columns_to_table(cols)
    table = table.replace_schema_metadata({**table.schema.metadata, PLAN_METADATA_KEY: plan.encode()})
    final = os.path.join(out_dir, item["name"])
    tmp = f"{final}.tmp-{uuid.uuid4().hex}"
    try:
        pq.write_table(table, tmp, compression=COMPRESSION, row_group_size=ROW_GROUP_SIZE)
        validate_table(pq.read_table(tmp), tmp, expected_rows=item["rows"])
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"shard": item["shard"], "rows": table.num_rows, "bytes": os.path.getsize(final),
            "seconds": time.perf_counter() - start}


def precompute(json_path: str, image_root: str, out_dir: str, *, layout: str = "rle",
               images_per_shard: int = 64, num_workers: int = 2, skip_invalid: bool = False,
               overwrite: bool = False, progress: bool = True, shutdown_ray: bool = True) -> PrecomputeResult:
    """Write (or complete) the Parquet tables of one COCO-format split into `out_dir`.

    Ray is started only when a shard is missing; a cluster this call started is shut down at
    the end unless `shutdown_ray` is False (the caller then shuts it down).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if images_per_shard < 1 or num_workers < 1:
        raise ValueError(f"images_per_shard and num_workers must be >= 1, got {images_per_shard}, {num_workers}")
    source = load_coco(json_path, image_root, skip_invalid=skip_invalid)
    records = source.records
    n = max(1, -(-len(records) // images_per_shard))
    chunks = [records[i * images_per_shard:(i + 1) * images_per_shard] for i in range(n)]
    manifest = {"schema_version": SCHEMA_VERSION, "layout": layout, "images_per_shard": images_per_shard,
                "source": os.path.abspath(json_path), "source_sha1": _fingerprint(json_path),
                "skip_invalid": skip_invalid, "images": len(records),
                "category_names": source.category_names, "label_to_category": source.label_to_category,
                "shards": {shard_name(i, n): sum(len(r) for r in c) for i, c in enumerate(chunks)}}
    os.makedirs(out_dir, exist_ok=True)
    _check_manifest(out_dir, manifest, overwrite)
    _remove_unplanned(out_dir, manifest["shards"])
    plan = _plan_json(manifest)
    rows = manifest["shards"]  # {shard name: instance rows}, in shard order
    names = list(rows)
    done = [_shard_done(out_dir, name, rows[name], plan) for name in names]
    todo = [i for i in range(n) if not done[i]]
    result = PrecomputeResult(out_dir=out_dir, shards=n, skipped=[i for i in range(n) if done[i]],
                              validation=source.report.summary())
    if todo:
        _write_shards(todo, names, rows, chunks, out_dir, layout, source.label_to_category, plan,
                      num_workers, shutdown_ray, progress, result)
    _write_manifest(out_dir, manifest)
    store = InstanceStore(out_dir)  # reads every shard back: schema, contiguity per image
    expected = sum(manifest["shards"].values())
    if len(store) != expected:
        raise ValueError(f"{out_dir}: {len(store)} rows on disk, expected {expected}")
    result.rows = expected
    result.bytes = sum(os.path.getsize(os.path.join(out_dir, s)) for s in manifest["shards"])
    result.written.sort()
    return result


def _write_shards(todo: list[int], names: list[str], rows: dict[str, int], chunks: list, out_dir: str,
                  layout: str, label_to_category: list[int], plan: str, num_workers: int,
                  shutdown_ray: bool, progress: bool, result: PrecomputeResult) -> None:
    """The missing shards, written by `num_workers` parallel Ray Data tasks; `result` is updated."""
    items = [{"shard": i, "name": names[i], "rows": rows[names[i]], "payload": pickle.dumps(chunks[i])}
             for i in todo]
    with ray_session(num_cpus=num_workers, shutdown=shutdown_ray):
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours below
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        start = time.perf_counter()
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map(
            _write_shard, fn_kwargs={"out_dir": out_dir, "layout": layout,
                                     "label_to_category": label_to_category, "plan": plan},
            compute=ray.data.TaskPoolStrategy(size=num_workers), num_cpus=1)
        bar = tqdm(total=len(todo), desc=f"precompute {os.path.basename(out_dir) or out_dir}",
                   unit="shard", disable=not progress)
        for row in ds.iter_rows():
            result.written.append(int(row["shard"]))
            result.rows_written += int(row["rows"])
            bar.update(1)
        bar.close()
        result.seconds = time.perf_counter() - start


def _write_manifest(out_dir: str, manifest: dict) -> None:
    tmp = os.path.join(out_dir, f"{MANIFEST}.tmp-{uuid.uuid4().hex}")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, MANIFEST))  # appears complete, or not at all


def _check_manifest(out_dir: str, manifest: dict, overwrite: bool) -> None:
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            old = json.load(f)
        if not isinstance(old, dict):
            raise ValueError(f"{path} is not a JSON object")
        changed = [k for k in PLAN_KEYS if old.get(k) != manifest[k]]
        why = f"{', '.join(changed)} differ"
    except ValueError:  # not JSON: damaged, or made by something else
        changed, why = [MANIFEST], f"its {MANIFEST} is unreadable"
    if not changed:
        return
    if not overwrite:
        raise ValueError(f"{out_dir} holds tables made with other inputs or settings ({why}); "
                         f"use another --out or --overwrite")
    for name in os.listdir(out_dir):
        if name.startswith("shard-") or name == MANIFEST:
            os.remove(os.path.join(out_dir, name))


def _remove_unplanned(out_dir: str, planned: dict[str, int]) -> None:
    """Remove shard files that are not in the plan: an interrupted run's (another shard count,
    or temporary files of killed tasks). The manifest check before has made sure that the
    directory holds nothing a finished run of other settings made."""
    for name in os.listdir(out_dir):
        if name.startswith("shard-") and name not in planned:
            os.remove(os.path.join(out_dir, name))


def _shard_done(out_dir: str, name: str, rows: int, plan: str) -> bool:
    """A complete shard of this plan: readable footer, the expected rows, the same plan recorded."""
    path = os.path.join(out_dir, name)
    if not os.path.exists(path):
        return False
    try:
        meta = pq.read_metadata(path)
        recorded = (meta.schema.to_arrow_schema().metadata or {}).get(PLAN_METADATA_KEY)
    except (OSError, ValueError):
        return False
    return meta.num_rows == rows and recorded == plan.encode()


def verify(out_dir: str) -> int:
    """Fully re-validate every shard of a directory against its manifest; returns the rows."""
    with open(os.path.join(out_dir, MANIFEST)) as f:
        manifest = json.load(f)
    total = 0
    for name, rows in manifest["shards"].items():
        path = os.path.join(out_dir, name)
        validate_table(pq.read_table(path), path, expected_rows=rows)
        total += rows
    return total


def result_summary(result: PrecomputeResult) -> dict:
    d = asdict(result)
    d["instances_per_second"] = result.instances_per_second
    d["bytes_per_instance"] = result.bytes / result.rows if result.rows else 0.0
    return d


def precompute_splits(data_cfg, splits=SPLITS, *, overwrite: bool = False,
                      progress: bool = False) -> dict[str, PrecomputeResult]:
    """Write (or complete) the tables of each split of `data_cfg` into
    `parquet_split_dir(data_cfg, split)`, with its layout, shard size, workers and skip_invalid.

    One Ray cluster serves every split: the running one, or a local one started by the first
    split that has work and shut down at the end. Split names are checked before any work.
    """
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; valid: {', '.join(SPLITS)}")
    out = {}
    started = not ray.is_initialized()
    try:
        for split in splits:
            json_path, image_root = split_paths(data_cfg, split)
            out[split] = precompute(json_path, image_root, parquet_split_dir(data_cfg, split),
                                    layout=data_cfg.parquet_layout,
                                    images_per_shard=data_cfg.parquet_images_per_shard,
                                    num_workers=data_cfg.precompute_workers,
                                    skip_invalid=data_cfg.skip_invalid, overwrite=overwrite,
                                    progress=progress, shutdown_ray=False)
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    return out


def ensure_precomputed(data_cfg, progress: bool = False) -> dict[str, str]:
    """Make sure both splits of `data_cfg` have their Parquet tables; returns split -> directory.

    For `DataConfig.integrals == "parquet"`: call it once in the driver before training
    (it uses the running Ray cluster, or starts a local one for the duration).
    """
    return {split: result.out_dir for split, result in precompute_splits(data_cfg, progress=progress).items()}
