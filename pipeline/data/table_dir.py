"""The files of a precomputed split directory, without Ray: names, the manifest and the plan it
records, atomic writes, and which shards are already complete (see `pipeline.data.precompute`).

    <dir>/shard-00007-of-00042.parquet   instance rows (`instance_table.SCHEMA`), per image in order
    <dir>/images.parquet                 one row per image (`instance_table.IMAGE_SCHEMA`)
    <dir>/_manifest.json                 the plan (`PLAN_KEYS`), categories, rows per shard
    <dir>/scaled-550/                    the same shards, "integral" layout, of the masks resized
                                         to 550×550 for the unaugmented routes (`scaled_table`)
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid

import pyarrow.parquet as pq

from pipeline.data.instance_table import SCHEMA_VERSION, validate_table
from pipeline.storage import is_uri

MANIFEST = "_manifest.json"
# What a directory's tables depend on: the manifest's and every shard's record of its plan.
PLAN_KEYS = ("schema_version", "layout", "images_per_shard", "source_sha1", "skip_invalid", "images")
PLAN_METADATA_KEY = b"maskaware.plan"
INFO_METADATA_KEY = b"maskaware.images"  # the shard's kept images and unreadable files (JSON)
ROW_GROUP_SIZE = 128  # small groups keep per-image filtered reads cheap (see ecosystem notes §4)
COMPRESSION = "zstd"
IMAGES_FILE = "images.parquet"


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}.parquet"


def fingerprint(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plan_json(manifest: dict, keys: tuple[str, ...] = PLAN_KEYS) -> str:
    return json.dumps({k: manifest[k] for k in keys}, sort_keys=True)


def write_validated(table, final: str, validate) -> None:
    """Write to a temporary name, read back, validate, rename: the file appears complete or not at all."""
    tmp = f"{final}.tmp-{uuid.uuid4().hex}"
    try:
        pq.write_table(table, tmp, compression=COMPRESSION, row_group_size=ROW_GROUP_SIZE)
        validate(pq.read_table(tmp), tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_manifest(out_dir: str, manifest: dict) -> None:
    tmp = os.path.join(out_dir, f"{MANIFEST}.tmp-{uuid.uuid4().hex}")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, MANIFEST))  # appears complete, or not at all


def read_manifest(out_dir: str) -> dict | None:
    """A directory's manifest; None when it is missing or not a JSON object."""
    try:
        with open(os.path.join(out_dir, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def check_manifest(out_dir: str, manifest: dict, overwrite: bool, keys: tuple[str, ...] = PLAN_KEYS) -> None:
    """Nothing to do when `out_dir` has no manifest or one with the same plan (`keys`); else an
    error, or with `overwrite` its shards and manifest removed."""
    if not os.path.exists(os.path.join(out_dir, MANIFEST)):
        return
    old = read_manifest(out_dir)
    if old is None:  # not a JSON object: damaged, or made by something else
        changed, why = [MANIFEST], f"its {MANIFEST} is unreadable"
    else:
        changed = [k for k in keys if old.get(k) != manifest[k]]
        why = f"{', '.join(changed)} differ"
    if not changed:
        return
    if not overwrite:
        raise ValueError(f"{out_dir} holds tables made with other inputs or settings ({why}); "
                         f"use another --out or --overwrite")
    for name in os.listdir(out_dir):
        if name.startswith("shard-") or name == MANIFEST:
            os.remove(os.path.join(out_dir, name))


def remove_unplanned(out_dir: str, planned: list[str]) -> None:
    """Remove shard files that are not in the plan: an interrupted run's (another shard count,
    or temporary files of killed tasks). The manifest check before has made sure that the
    directory holds nothing a finished run of other settings made."""
    for name in os.listdir(out_dir):
        if name.startswith("shard-") and name not in planned:
            os.remove(os.path.join(out_dir, name))


def shard_info(out_dir: str, name: str, plan: str) -> dict | None:
    """A complete shard of this plan (readable footer, the same plan recorded, the rows its
    images should have): its kept images and unreadable files; None when it must be written."""
    path = os.path.join(out_dir, name)
    if not os.path.exists(path):
        return None
    try:
        meta = pq.read_metadata(path)
        recorded = meta.schema.to_arrow_schema().metadata or {}
        info = json.loads(recorded[INFO_METADATA_KEY])
    except (OSError, ValueError, KeyError):
        return None
    if recorded.get(PLAN_METADATA_KEY) != plan.encode() or meta.num_rows != sum(r for _, r in info["kept"]):
        return None
    return info


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


def tables_current(out_dir: str, json_path: str, settings: dict) -> bool:
    """Whether `out_dir` holds finished tables of this very JSON file (same bytes) made with
    `settings` (layout, images_per_shard, skip_invalid): checked from the manifest alone, without
    parsing the JSON. Tables behind a URI (s3://…) are taken as they are: they are made elsewhere."""
    if is_uri(out_dir):
        return True
    manifest = read_manifest(out_dir)
    expected = {"schema_version": SCHEMA_VERSION, **settings}
    return (manifest is not None and all(manifest.get(k) == v for k, v in expected.items())
            and os.path.exists(os.path.join(out_dir, IMAGES_FILE))
            and os.path.exists(json_path) and manifest.get("source_sha1") == fingerprint(json_path))
