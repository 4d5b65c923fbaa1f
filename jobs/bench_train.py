"""python -m jobs.bench_train: training throughput per assigner, and the data-path comparison.

Default: for each assigner, build the preset's worker parts (data, model, optimizer) in this
process, run `--warmup` untimed steps, then time `--iters` full `train_step`s (loading and
augmentation included, as in training) and print iterations/s and images/s. This is what one
Train worker does, without Ray's fixed start-up cost (≈20–30 s per run, see docs/benchmarks.md).

--table3 prints maIoU Table 3 (GmaIoU Table 4): average seconds per training iteration of
YOLACT-550 R50 (`TABLE3_OVERRIDES` on top of the preset, then --set) for fixed IoU, ATSS w. IoU,
ATSS w. maIoU by brute force (the benchmark-only `atss_maiou_brute`), ATSS w. maIoU and GmaIoU
with integral images, and the brute-force / integral-image speed-up (iteration and assignment).

--data-path compares how batches reach a worker: the per-worker DataLoader over the worker's
shard of image keys (what the trainer uses) against a Ray Data pipeline
(`from_items(keys).map(load + augment) -> iter_rows`), both producing the same samples.
"""
from __future__ import annotations

import argparse
import json
import contextlib
import statistics
import sys
import time
from dataclasses import replace

import torch

from pipeline.config import ASSIGNER_NAMES, ASSIGNER_TABLE, apply_overrides

from pipeline.presets import get_preset

PHASES = ("forward", "assign", "losses", "backward", "optimizer")
# maIoU Table 3 / GmaIoU Table 4: YOLACT-550 R50, SGD, the preset's batch.
TABLE3_OVERRIDES = ("model.backbone=resnet50", "model.fpn_channels=256", "model.num_protos=32",
                    "data.scale=550", "train.optimizer=sgd", "train.lr=4e-3", "train.weight_decay=5e-4")
TABLE3_ROWS = ("fixed_iou", "atss_iou", "atss_maiou_brute", "atss_maiou", "atss_gmaiou")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.bench_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", help="base configuration (default: tiny)")
    p.add_argument("--assigners", nargs="+", default=list(ASSIGNER_NAMES), choices=list(ASSIGNER_TABLE),
                   metavar="NAME", help="assigners to time (default: all six of the grids)")
    p.add_argument("--table3", action="store_true",
                   help="instead: the iteration-time table (R50, S = 550; see above) (default: off)")
    p.add_argument("--iters", type=int, default=20, help="timed steps per assigner (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu); on CUDA the steps run "
                   "in bf16 autocast when train.amp is on (default on), and the peak memory is reported")
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


class PhaseClock:
    """Wall time of each phase of `train_step`, taken from outside it: hooks on the model's forward
    and the optimizer's step, wrappers around `step.assign_batch`, the losses and
    `Tensor.backward`. What is left of a step ("other") is the step's own glue."""

    def __init__(self, parts, step_module):
        self.parts, self.step_module = parts, step_module
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._start: dict[str, float] = {}

    def _begin(self, phase: str) -> None:
        self._start[phase] = time.perf_counter()

    def _end(self, phase: str) -> None:
        self.seconds[phase] += time.perf_counter() - self._start.pop(phase)

    def _timed(self, phase: str, fn):
        def run(*args, **kwargs):
            self._begin(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self._end(phase)
        return run

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, dict.fromkeys(PHASES, 0.0)
        return out

    @contextlib.contextmanager
    def installed(self):
        model, opt = self.parts.model, self.parts.optimizer
        handles = [model.register_forward_pre_hook(lambda *_: self._begin("forward")),
                   model.register_forward_hook(lambda *_: self._end("forward")),
                   opt.register_step_pre_hook(lambda *_: self._begin("optimizer")),
                   opt.register_step_post_hook(lambda *_: self._end("optimizer"))]
        saved = (self.step_module.assign_batch, self.parts.losses_fn, torch.Tensor.backward)
        self.step_module.assign_batch = self._timed("assign", saved[0])
        self.parts.losses_fn = self._timed("losses", saved[1])
        torch.Tensor.backward = self._timed("backward", saved[2])
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self.step_module.assign_batch, self.parts.losses_fn, torch.Tensor.backward = saved


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_steps(cfg, assigner: str, iters: int, warmup: int, device: torch.device = torch.device("cpu")) -> dict:
    from pipeline.train import step as step_module
    from pipeline.train.parts import build_parts

    cfg = replace(cfg, train=replace(cfg.train, assigner=assigner))
    parts = build_parts(cfg, rank=0, world=1, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    clock = PhaseClock(parts, step_module)
    times, phases, it = [], [], 0
    epoch = 0
    while it < warmup + iters:
        for batch in parts.loader(epoch):
            with clock.installed():
                t0 = time.perf_counter()
                images, targets = parts.to_device(batch)
                step_module.train_step(parts.model, images, targets, parts.assign_fn, parts.optimizer,
                                       losses_fn=parts.losses_fn, weights=parts.weights, amp=cfg.train.amp)
                _sync(device)
                elapsed = time.perf_counter() - t0
            split = clock.take()
            if it >= warmup:
                times.append(elapsed)
                phases.append({**split, "other": elapsed - sum(split.values())})
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
    cuda = device.type == "cuda"
    return {"assigner": assigner, "scale": cfg.data.scale, "batch": bs,
            "it_per_s": 1.0 / (step_s + load_s), "img_per_s": bs / (step_s + load_s),
            "step_ms": 1000 * step_s, "load_ms": 1000 * load_s, "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(device) if cuda else "cpu",
            "precision": "bf16" if cuda and cfg.train.amp else "fp32",
            "peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
            "steps_ms": [1000 * t for t in times],
            **{f"{k}_ms": 1000 * statistics.median(p[k] for p in phases) for k in (*PHASES, "other")}}


def table3(cfg, iters: int, warmup: int, device: torch.device) -> list[dict]:
    """`bench_steps` of each Table-3 row; prints the table and the brute-force speed-ups."""
    rows = []
    print(f"{'assigner':<32} {'s/iter':>7} {'assign s':>9} | YOLACT-{cfg.data.scale} "
          f"{cfg.model.backbone}, batch {cfg.train.batch_size}, {iters} timed iterations", flush=True)
    for name in TABLE3_ROWS:
        r = bench_steps(cfg, name, iters, warmup, device)
        r["s_per_iter"] = 1.0 / r["it_per_s"]
        rows.append(r)
        print(f"{ASSIGNER_TABLE[name].label:<32} {r['s_per_iter']:7.2f} {r['assign_ms'] / 1000:9.3f}", flush=True)
    by = {r["assigner"]: r for r in rows}
    brute, fast = by["atss_maiou_brute"], by["atss_maiou"]
    print(f"brute force / integral images: {brute['s_per_iter'] / fast['s_per_iter']:.1f}x per iteration, "
          f"{brute['assign_ms'] / fast['assign_ms']:.0f}x on the assignment")
    return rows


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
    base = list(TABLE3_OVERRIDES) if args.table3 else []
    cfg = apply_overrides(get_preset(args.preset), base + args.overrides)
    if cfg.data.source == "parquet":  # as a training driver does: the tables, once, before the workers
        from pipeline.data.precompute import ensure_precomputed

        ensure_precomputed(cfg.data)
    if args.table3:
        rows = table3(cfg, args.iters, args.warmup, torch.device(args.device))
    elif args.eval:
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
              f"{'load ms':>8} | median ms: " + " ".join(f"{k:>9}" for k in (*PHASES, "other")))
        for name in args.assigners:
            r = bench_steps(cfg, name, args.iters, args.warmup, torch.device(args.device))
            rows.append(r)
            print(f"{name:<12} {r['scale']:>4} {r['batch']:>3} {r['it_per_s']:6.2f} "
                  f"{r['img_per_s']:6.2f} {r['step_ms']:8.1f} {r['load_ms']:8.1f} |            "
                  + " ".join(f"{r[k + '_ms']:9.1f}" for k in (*PHASES, "other")), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
