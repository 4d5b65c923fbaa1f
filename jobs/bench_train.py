"""python -m jobs.bench_train: training throughput per assigner, and the data-path comparison.

Default: for each assigner, build the preset's worker parts (data, model, optimizer) in this
process, run `--warmup` untimed steps, then time `--iters` full `train_step`s (loading and
augmentation included, as in training) and print iterations/s and images/s. This is what one
Train worker does, without Ray's fixed start-up cost (≈20–30 s per run, see docs/benchmarks.md).

--data-path compares how batches reach a worker: the per-worker DataLoader over the worker's
shard of image keys (what the trainer uses) against a Ray Data pipeline
(`from_items(keys).map(load + augment) -> iter_rows`), both producing the same samples.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace

import torch

from pipeline.config import ASSIGNER_NAMES, apply_overrides

from pipeline.presets import get_preset


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.bench_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", help="base configuration (default: tiny)")
    p.add_argument("--assigners", nargs="+", default=list(ASSIGNER_NAMES), choices=ASSIGNER_NAMES,
                   metavar="NAME", help="assigners to time (default: all six)")
    p.add_argument("--iters", type=int, default=20, help="timed steps per assigner (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's choice, all cores)")
    p.add_argument("--data-path", action="store_true",
                   help="instead: compare DataLoader and Ray Data batch delivery (default: off)")
    p.add_argument("--eval", action="store_true",
                   help="instead: time one validation pass as eval.eval_every runs it (every metric "
                        "but fps), after --warmup training steps (default: off)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the results as JSON "
                   "(default: none)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.FIELD=VALUE", help="config override, repeatable (default: none)")
    return p


def bench_steps(cfg, assigner: str, iters: int, warmup: int) -> dict:
    from pipeline.train.step import train_step
    from pipeline.train.parts import build_parts

    cfg = replace(cfg, train=replace(cfg.train, assigner=assigner))
    parts = build_parts(cfg, rank=0, world=1, device=torch.device("cpu"))
    times, it = [], 0
    epoch = 0
    while it < warmup + iters:
        for batch in parts.loader(epoch):
            t0 = time.perf_counter()
            images, targets = parts.to_device(batch)
            train_step(parts.model, images, targets, parts.assign_fn, parts.optimizer,
                       losses_fn=parts.losses_fn, weights=parts.weights)
            if it >= warmup:
                times.append(time.perf_counter() - t0)
            it += 1
            if it >= warmup + iters:
                break
        epoch += 1
    # loading is timed apart too: the loop above takes batches from the loader between clocks
    t0 = time.perf_counter()
    n = 0
    for _ in zip(range(iters), parts.loader(epoch + 1)):
        n += 1
    load_s = (time.perf_counter() - t0) / max(n, 1)
    step_s = statistics.median(times)
    bs = cfg.train.batch_size
    return {"assigner": assigner, "scale": cfg.data.scale, "batch": bs,
            "it_per_s": 1.0 / (step_s + load_s), "img_per_s": bs / (step_s + load_s),
            "step_ms": 1000 * step_s, "load_ms": 1000 * load_s, "threads": torch.get_num_threads()}


def bench_data_path(cfg, batches: int) -> list[dict]:
    import ray

    from pipeline.data.datasets import ShardedSampler, build_dataset, collate
    from pipeline.ray_utils import init_ray

    train_set = build_dataset(cfg.data, "train")
    keys = list(ShardedSampler(len(train_set), seed=0))[:batches * cfg.train.batch_size]
    out = []
    t0 = time.perf_counter()
    from pipeline.data.shards import ResumableBatchSampler
    from torch.utils.data import DataLoader
    loader = DataLoader(train_set, batch_sampler=ResumableBatchSampler(keys, cfg.train.batch_size),
                        collate_fn=collate, num_workers=cfg.data.loader_workers)
    n = sum(len(b.targets) for b in loader)
    out.append({"path": f"DataLoader ({cfg.data.loader_workers} loader processes)",
                "images": n, "seconds": time.perf_counter() - t0})
    started = init_ray()
    try:
        t0 = time.perf_counter()
        ds = ray.data.from_items([{"key": list(k)} for k in keys])
        ds = ds.map(lambda row: {"item": train_set[tuple(row["key"])]})
        n = 0
        items = []
        for row in ds.iter_rows():
            items.append(row["item"])
            if len(items) == cfg.train.batch_size:
                n += len(collate(items).targets)
                items = []
        out.append({"path": "Ray Data (from_items -> map -> iter_rows)", "images": n,
                    "seconds": time.perf_counter() - t0})
    finally:
        if started:
            ray.shutdown()
    for r in out:
        r["img_per_s"] = r["images"] / r["seconds"]
    return out


def bench_eval(cfg, repeats: int, warmup: int) -> dict:
    """Seconds of one mid-training evaluation (median of `repeats`, after `warmup` training steps)
    next to the median training step of the same worker."""
    from pipeline.eval.evaluate import evaluate_model
    from pipeline.train.parts import build_parts
    from pipeline.train.step import train_step

    parts = build_parts(cfg, rank=0, world=1, device=torch.device("cpu"))
    steps = []
    for batch in parts.loader(0):
        t0 = time.perf_counter()
        images, targets = parts.to_device(batch)
        train_step(parts.model, images, targets, parts.assign_fn, parts.optimizer,
                   losses_fn=parts.losses_fn, weights=parts.weights)
        steps.append(time.perf_counter() - t0)
        if len(steps) == warmup + repeats:
            break
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        evaluate_model(parts.model, parts.val_set, replace(cfg.eval, fps_runs=0), torch.device("cpu"),
                       batch_size=cfg.train.batch_size, threads=torch.get_num_threads())
        times.append(time.perf_counter() - t0)
    step_ms = 1000 * statistics.median(steps[warmup:])
    seconds = statistics.median(times)
    return {"images": len(parts.val_set), "eval_s": seconds, "step_ms": step_ms,
            "steps_per_eval": 1000 * seconds / step_ms, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    if cfg.data.source == "parquet":  # as a training driver does: the tables, once, before the workers
        from pipeline.data.precompute import ensure_precomputed

        ensure_precomputed(cfg.data)
    if args.eval:
        r = bench_eval(cfg, args.iters, args.warmup)
        print(f"one evaluation of {r['images']} validation images: {r['eval_s']:.2f} s on {r['threads']} "
              f"thread(s) = {r['steps_per_eval']:.1f} training steps of {r['step_ms']:.0f} ms")
        rows = [r]
    elif args.data_path:
        rows = bench_data_path(cfg, args.iters)
        for r in rows:
            print(f"{r['path']:<45} {r['images']:>5} images {r['seconds']:7.2f} s "
                  f"{r['img_per_s']:7.1f} img/s")
    else:
        rows = []
        print(f"{'assigner':<12} {'S':>4} {'B':>3} {'it/s':>6} {'img/s':>6} {'step ms':>8} "
              f"{'load ms':>8}")
        for name in args.assigners:
            r = bench_steps(cfg, name, args.iters, args.warmup)
            rows.append(r)
            print(f"{name:<12} {r['scale']:>4} {r['batch']:>3} {r['it_per_s']:6.2f} "
                  f"{r['img_per_s']:6.2f} {r['step_ms']:8.1f} {r['load_ms']:8.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
