"""`python -m jobs.bench_data --scaled 550:512,128:128`: the unaugmented route's integrals,
(b) built in the loader from the resized S×S masks vs (a') read from the scaled tables
(`pipeline.data.scaled_table`), per image: time of each, ATSS-maIoU assignment time with each,
and how many assignments agree (the route is exact: every anchor should); plus what the scaled
precompute costs (Ray Data, 2 tasks, best of `repeats` fresh runs: seconds, bytes/instance).

Each `S:SIZE` pair measures S on a synthetic training split of `images` images of SIZE²
(550:512 as the data section's other tables; 128:128 is the `tiny` preset's data and S).
"""
from __future__ import annotations

import os
import shutil
import time

import numpy as np
import torch

from assigners import ASSIGNERS, BACKGROUND
from pipeline.config import DataConfig
from pipeline.data.augment import AugmentParams, transform
from pipeline.data.coco import instance_rles, load_coco, load_image
from pipeline.data.datasets import integrals_from_sample, split_paths
from pipeline.data.instance_table import InstanceStore
from pipeline.data.precompute import precompute, precompute_scaled
from pipeline.data.scaled_table import scaled_dir
from pipeline.data.synthetic import ensure_synthetic
from pipeline.report.anchor_grids import input_anchors

ASSIGNER = "atss_maiou"


def parse_pairs(text: str) -> list[tuple[int, int]]:
    """"550:512,128:128" -> [(550, 512), (128, 128)]: (S, synthetic image side)."""
    try:
        return [(int(s), int(size)) for s, size in (p.split(":") for p in text.split(",") if p.strip())]
    except ValueError:
        raise ValueError(f"--scaled takes S:SIZE[,S:SIZE…], e.g. 550:512,128:128; got {text!r}") from None


def bench_scaled_precompute(json_path: str, image_root: str, work: str, scale: int, repeats: int) -> dict:
    """The parent tables (rle layout, as the default), then `repeats` fresh scaled precomputes."""
    parent = os.path.join(work, f"parent-{scale}")
    pre = precompute(json_path, image_root, parent, images_per_shard=16, num_workers=2, progress=False,
                     shutdown_ray=False)
    runs = []
    for _ in range(repeats):
        shutil.rmtree(scaled_dir(parent, scale), ignore_errors=True)
        runs.append(precompute_scaled(parent, scale, num_workers=2, progress=False, shutdown_ray=False))
    best = min(runs, key=lambda r: r.seconds)
    return {"parent": parent, "instances": best.rows, "seconds": best.seconds,
            "seconds_all": [r.seconds for r in runs], "instances_per_s": best.rows / best.seconds,
            "bytes_per_instance": best.bytes / max(best.rows, 1),
            "parent_bytes_per_instance": pre.bytes / max(pre.rows, 1)}


def bench_scaled_reads(source, parent: str, scale: int) -> dict:
    """Per image of `source`, unaugmented at S = `scale`: (b) vs (a') and their assignments."""
    params = AugmentParams(scale=scale, train=False)
    start = time.perf_counter()
    store = InstanceStore(scaled_dir(parent, scale))
    open_s = time.perf_counter() - start
    anchors, per_level = input_anchors("atss", scale)
    assign = ASSIGNERS[ASSIGNER]
    t = {"resize": [], "b": [], "a": [], "assign_b": [], "assign_a": []}
    same_anchor = total_anchor = same_pos = union_pos = images_same = positives = 0
    for index, r in enumerate(source.records):
        image = load_image(r.path, r.image_id)
        t0 = time.perf_counter()
        sample = transform(image, instance_rles(r), r.labels, r.boxes, params)
        t["resize"].append(time.perf_counter() - t0)
        boxes = torch.from_numpy(sample.boxes)
        routes = {"b": lambda: integrals_from_sample(sample),
                  "a": lambda: store.integrals(r.image_id, expected=len(r)).select(torch.from_numpy(sample.keep))}
        order = ("b", "a") if index % 2 == 0 else ("a", "b")  # alternated: neither always runs warm
        got, masks = {}, {}
        for k in order:
            got[k] = _timed(t[k], routes[k])
        for k in order:
            masks[k] = _timed(t[f"assign_{k}"], lambda: assign(boxes, None, anchors, per_level, integral=got[k]))
        ma, mb = masks["a"], masks["b"]
        same = ma == mb
        pos = (ma != BACKGROUND) | (mb != BACKGROUND)
        same_anchor, total_anchor = same_anchor + int(same.sum()), total_anchor + same.numel()
        same_pos, union_pos = same_pos + int((same & pos).sum()), union_pos + int(pos.sum())
        positives += int((mb != BACKGROUND).sum())
        images_same += bool(same.all())
    n = len(source.records)
    return {"images": n, "gts": int(sum(len(r) for r in source.records)), "anchors_per_image": int(anchors.shape[0]),
            "open_s": open_s, **{f"{k}_ms": 1e3 * float(np.mean(v)) for k, v in t.items()},
            "positives_per_image": positives / n, "identical_anchors": same_anchor / total_anchor,
            "identical_positives": same_pos / max(union_pos, 1), "identical_images": images_same / n}


def _timed(times: list[float], fn):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
    return out


def run(args, work: str) -> dict:
    """Every S:SIZE pair of `args.scaled`; the Ray cluster is the caller's."""
    out = {}
    for scale, size in parse_pairs(args.scaled):
        cfg = DataConfig(synthetic_dir=args.synthetic_dir, synthetic_train_images=args.images,
                         synthetic_val_images=max(1, args.images // 4), synthetic_size=size,
                         synthetic_seed=args.seed, scale=scale)
        ensure_synthetic(cfg, progress=True)
        json_path, image_root = split_paths(cfg, "train")
        pre = bench_scaled_precompute(json_path, image_root, work, scale, args.repeats)
        reads = bench_scaled_reads(load_coco(json_path, image_root), pre.pop("parent"), scale)
        out[f"{scale}:{size}"] = {"precompute": pre, "reads": reads}
    return out


def report(args, numbers: dict) -> str:
    lines = [f"Unaugmented route, {args.images} synthetic training images per row, one torch thread; "
             f"{ASSIGNER} with the official ATSS anchors.", "",
             "| S (images) | resize (ms) | (b) loader integrals (ms) | (a') scaled-table read (ms) | "
             "assign with (b) (ms) | assign with (a') (ms) | identical anchors | identical positives | "
             "identical images |", "|---|---|---|---|---|---|---|---|---|"]
    for key, v in numbers.items():
        r = v["reads"]
        scale, size = key.split(":")
        lines.append(f"| {scale} ({size}²) | {r['resize_ms']:.2f} | {r['b_ms']:.3f} | {r['a_ms']:.3f} | "
                     f"{r['assign_b_ms']:.2f} | {r['assign_a_ms']:.2f} | {r['identical_anchors']:.4%} | "
                     f"{r['identical_positives']:.4%} | {r['identical_images']:.1%} |")
    lines += ["", "| S (images) | instances | scaled precompute (s, 2 tasks) | instances/s | "
              "bytes/instance (scaled) | bytes/instance (parent, rle) | open scaled tables (s) |",
              "|---|---|---|---|---|---|---|"]
    for key, v in numbers.items():
        p, r = v["precompute"], v["reads"]
        scale, size = key.split(":")
        lines.append(f"| {scale} ({size}²) | {p['instances']} | {p['seconds']:.2f} | {p['instances_per_s']:.0f} | "
                     f"{p['bytes_per_instance']:.0f} | {p['parent_bytes_per_instance']:.0f} | {r['open_s']:.3f} |")
    return "\n".join(lines)
