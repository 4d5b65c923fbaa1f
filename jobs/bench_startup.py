"""Start-up of a training worker at COCO scale, without COCO (docs/benchmarks.md, last section).

    python -m jobs.bench_startup [--root /tmp/maskaware-coco-scale] [--subset 3000]

1. generates, once, a COCO-sized annotation file: 118,287 images, ~860k instances (≈1 % crowd
   regions as uncompressed RLE, the rest one polygon each) with COCO's statistics (instances
   per image: mean 7.3; object size: 41 % small, 34 % medium, 24 % large; polygon vertices:
   median ~18, long tail); the image files are links to one JPEG per image size;
2. precomputes its Parquet tables (`jobs.precompute`'s code, 2 Ray workers), and measures the
   precompute's instances/s with 1 and 2 Ray workers on the first `--subset` images;
3. measures, each in a fresh process, what a training worker pays before its first sample:
   `build_dataset(train)` + the first 8 samples' records, with `data.source=coco` (parse the JSON,
   open every image header) and `data.source=parquet`: seconds, resident memory it adds (RSS
   after minus before) and peak RSS.

Keep the root out of the repository (it is ~0.5 GB). Prints a markdown table and JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

COCO_IMAGES = 118_287
INSTANCES_PER_IMAGE = 7.27  # COCO train2017: 860,001 annotations
CROWD_FRACTION = 0.009
# sqrt(area) log-normal fitted to COCO's 41 % < 32², 75 % < 96² (small / medium / large)
SIDE_LOG_MEAN, SIDE_LOG_STD = 3.744, 1.218
VERTEX_LOG_MEDIAN, VERTEX_LOG_STD = np.log(18.0), 0.6
IMAGE_SIZES = [((480, 640), 0.40), ((427, 640), 0.25), ((640, 480), 0.12), ((425, 640), 0.08),
               ((640, 427), 0.05), ((512, 640), 0.05), ((360, 640), 0.05)]  # (h, w), share
CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]  # COCO's 80
SAMPLES = 8


def _polygon(rng, cx, cy, radius, n, h, w) -> list[float]:
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.6, 1.0, n)
    xs = np.clip(cx + r * np.cos(angles), 0, w - 1)
    ys = np.clip(cy + r * np.sin(angles), 0, h - 1)
    return np.round(np.stack([xs, ys], 1).reshape(-1), 2).tolist()  # [x0, y0, x1, y1, ...]


def _annotation(rng, ann_id, image_id, h, w, mask_utils) -> dict | None:
    """One random instance; None for a polygon too thin to cover a pixel (drawn again)."""
    side = float(np.clip(np.exp(rng.normal(SIDE_LOG_MEAN, SIDE_LOG_STD)), 3, 0.9 * min(h, w)))
    radius = min(side / np.sqrt(np.pi) * 1.15, min(h, w) / 2 - 1)  # the jagged polygon covers ~side² px
    cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
    n = int(np.clip(np.exp(rng.normal(VERTEX_LOG_MEDIAN, VERTEX_LOG_STD)) * (1 + side / 300), 3, 600))
    poly = _polygon(rng, cx, cy, radius, n, h, w)
    rle = mask_utils.merge(mask_utils.frPyObjects([poly], h, w))
    if mask_utils.area(rle) == 0:
        return None
    crowd = rng.random() < CROWD_FRACTION
    seg = [poly]
    if crowd:  # COCO stores crowd regions as uncompressed RLE (column-major run lengths)
        flat = mask_utils.decode(rle).reshape(-1, order="F")
        changes = np.flatnonzero(np.diff(flat)) + 1
        seg = {"size": [h, w], "counts": np.diff(np.r_[0, changes, flat.size]).tolist()}
        if flat[0]:
            seg["counts"].insert(0, 0)
    return {"id": ann_id, "image_id": image_id, "category_id": int(rng.choice(CATEGORY_IDS)),
            "iscrowd": int(crowd), "area": round(float(mask_utils.area(rle)), 2),
            "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)], "segmentation": seg}


def generate(root: str, images: int, seed: int = 0) -> str:
    """The annotation file and linked image files under `root` (skipped when already there)."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    json_path = os.path.join(root, "annotations", "train.json")
    if os.path.exists(json_path):
        return json_path
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    sizes, shares = zip(*IMAGE_SIZES)
    templates = {}
    for h, w in sizes:  # a smooth picture with noise: decodes like a photo, not like a flat colour
        yy, xx = np.mgrid[0:h, 0:w]
        pic = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1) + rng.integers(0, 40, (h, w, 3))
        templates[(h, w)] = os.path.join(root, f"template_{h}x{w}.jpg")
        Image.fromarray(np.clip(pic, 0, 255).astype(np.uint8)).save(templates[(h, w)], quality=90)
    data = {"images": [], "annotations": [],
            "categories": [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in CATEGORY_IDS]}
    counts = rng.negative_binomial(1.3, 1.3 / (1.3 + INSTANCES_PER_IMAGE), images)
    for image_id in range(1, images + 1):
        h, w = sizes[rng.choice(len(sizes), p=np.asarray(shares) / sum(shares))]
        name = f"{image_id:012d}.jpg"
        link = os.path.join(root, "images", name)
        if not os.path.lexists(link):
            os.symlink(templates[(h, w)], link)
        data["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
        for _ in range(counts[image_id - 1]):
            ann = None
            while ann is None:
                ann = _annotation(rng, len(data["annotations"]) + 1, image_id, h, w, mask_utils)
            data["annotations"].append(ann)
    tmp = json_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, json_path)
    return json_path


def _data_config(root: str, json_name: str, source: str):
    from pipeline.config import DataConfig

    tables = os.path.join(root, "parquet-" + json_name.removesuffix(".json"))
    return DataConfig(data_dir=root, train_json=f"annotations/{json_name}", val_json=f"annotations/{json_name}",
                      source=source, parquet_dir=tables, parquet_images_per_shard=64)


def startup(root: str, json_name: str, source: str) -> dict:
    """One worker's start-up on `source` (run in a fresh process): seconds and memory."""
    import psutil

    from pipeline.data.datasets import build_dataset

    cfg = _data_config(root, json_name, source)
    proc = psutil.Process()
    before = proc.memory_info().rss
    t0 = time.perf_counter()
    ds = build_dataset(cfg, "train")
    records = [ds.record(i) for i in range(0, len(ds), len(ds) // SAMPLES)[:SAMPLES]]
    seconds = time.perf_counter() - t0
    return {"source": source, "seconds": seconds, "images": len(ds),
            "instances_read": int(sum(len(r) for r in records)),
            "rss_added_mb": (proc.memory_info().rss - before) / 2**20,
            "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; getrusage's ru_maxrss would carry the parent's over exec)."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kb / 2**10


def subset_json(json_path: str, images: int) -> str:
    """The first `images` images of the file and their annotations, next to it (the file
    itself when it has no more)."""
    out = json_path.replace(".json", f"_first{images}.json")
    if images >= COCO_IMAGES or os.path.exists(out):
        return json_path if images >= COCO_IMAGES else out
    with open(json_path) as f:
        data = json.load(f)
    data["images"] = data["images"][:images]
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    with open(out, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    return out


def bench_precompute(root: str, json_path: str, workers: int) -> dict:
    """Instances/s of the precompute with `workers` Ray workers, into a fresh directory."""
    import tempfile

    from pipeline.data.precompute import precompute

    with tempfile.TemporaryDirectory() as d:
        r = precompute(json_path, os.path.join(root, "images"), d, num_workers=workers, progress=False)
    return {"workers": workers, "instances": r.rows_written, "seconds": r.seconds,
            "instances_per_second": r.instances_per_second}


def make_tables(root: str, json_name: str) -> dict:
    """The tables the Parquet route reads (resumable: finished shards are kept)."""
    from pipeline.data.precompute import precompute_splits

    t0 = time.perf_counter()
    result = precompute_splits(_data_config(root, json_name, "parquet"), ["train"], progress=True)["train"]
    return {"instances": result.rows, "written_shards": len(result.written), "ray_seconds": result.seconds,
            "wall_seconds": time.perf_counter() - t0, "bytes": result.bytes}


def measure_startup(root: str, json_name: str, source: str) -> dict:
    child = subprocess.run([sys.executable, "-m", "jobs.bench_startup", "--root", root, "--startup", source,
                            "--json-name", json_name], check=True, capture_output=True, text=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def report(out: dict) -> str:
    c, p = out["coco"], out["parquet"]
    lines = ["| route | start-up s | RSS added MB | peak RSS MB |", "|---|---|---|---|"]
    for r in (c, p):
        lines.append(f"| {r['source']} | {r['seconds']:.2f} | {r['rss_added_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", f"Parquet / JSON: time {p['seconds'] / c['seconds']:.3f}, RSS added "
              f"{p['rss_added_mb'] / max(c['rss_added_mb'], 1e-9):.3f}, peak {p['peak_rss_mb'] / c['peak_rss_mb']:.3f}"]
    for k in ("precompute_1", "precompute_2"):
        if k in out:
            lines.append(f"precompute, {out[k]['workers']} Ray worker(s): {out[k]['instances_per_second']:.0f} "
                         f"instances/s ({out[k]['instances']} instances)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.bench_startup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/maskaware-coco-scale", help="where the data go (default: %(default)s)")
    p.add_argument("--images", type=int, default=COCO_IMAGES,
                   help="images of the start-up measurement: the first N of the file (default: all)")
    p.add_argument("--subset", type=int, default=1000, help="images of the throughput runs (default: %(default)s)")
    p.add_argument("--routes", default="parquet,coco", help="routes to measure (default: %(default)s)")
    p.add_argument("--no-throughput", action="store_true", help="skip the 1- and 2-worker throughput runs")
    p.add_argument("--startup", choices=("coco", "parquet"), help=argparse.SUPPRESS)  # the child process
    p.add_argument("--json-name", default="train.json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.startup:
        print(json.dumps(startup(args.root, args.json_name, args.startup)))
        return 0
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster
    json_path = generate(args.root, COCO_IMAGES)
    out = {"load_before": os.getloadavg()}
    if not args.no_throughput:
        small = subset_json(json_path, args.subset)
        for workers in (1, 2):
            out[f"precompute_{workers}"] = bench_precompute(args.root, small, workers)
            print(json.dumps(out[f"precompute_{workers}"]), flush=True)
    name = os.path.basename(subset_json(json_path, args.images))
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    if "parquet" in routes:
        out["tables"] = make_tables(args.root, name)
        print(json.dumps(out["tables"]), flush=True)
    for source in routes:
        out[source] = measure_startup(args.root, name, source)
        print(json.dumps(out[source]), flush=True)
    out["load_after"] = os.getloadavg()
    if "coco" in out and "parquet" in out:
        print(report(out))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
