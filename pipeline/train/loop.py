"""The Ray Train worker: `train_loop_per_worker(config)` trains one run to its end on one rank.

1. build data, model, optimizer and LR schedule (`pipeline.train.parts`); DDP-wrap the model;
2. restore the latest checkpoint if Ray hands one over (model, optimizer, scheduler, iteration,
   per-rank RNG);
3. `train_step` until the last iteration, reporting every `log_every` iterations (losses averaged
   over the window and over ranks), with a checkpoint every `checkpoint_every`;
4. final evaluation (val predictions sharded over ranks, metrics on rank 0) and a final report
   carrying the final checkpoint with the evaluation outputs in it.

Data reaches workers as per-worker PyTorch DataLoaders over a deterministic shard of the
dataset (`pipeline.data.shards`) rather than Ray Data shards: the order is a pure function of
(seed, epoch), every sample has its own augmentation seed, and the loader position is just the
iteration, which is what makes an interrupted run resume to bit-identical weights
(docs/benchmarks.md, "data path").

Fault injection (tests): `train.crash_at_iter = K` makes rank `train.crash_rank` exit hard
(`os._exit`) right before step K, once: a marker file in the run's storage directory stops the
restarted worker from crashing again.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.experimental import tqdm_ray
from ray.train import Checkpoint
from tqdm import tqdm

from pipeline import storage, tracking
from pipeline.config import Config
from pipeline.data.shards import derive_seed
from pipeline.eval.evaluate import evaluate_model
from pipeline.eval.runtime import all_gather
from pipeline.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint, seed_everything
from pipeline.train.parts import WorkerParts, build_parts
from pipeline.train.phases import EVALUATION, TRAINING, WORKER_SETUP
from pipeline.train.progress import TrainProgress
from pipeline.train.step import stats_to_floats, total_iterations, train_step

CRASH_MARKER = "crash_injected_at_{}"
# The controller collects reports by polling (every `ray_utils.TRAIN_POLL_S`; 2 s at Ray's default):
# wait a little longer before the injected crash so that the checkpoint reported just before it is registered.
CRASH_GRACE_S = 3.0
METRICS_FILE = "metrics.json"
BAD_IMAGES = "bad_images"  # training samples left out because their image could not be read


def _mean_over_ranks(stats: dict[str, float], world: int, device: torch.device) -> dict[str, float]:
    if world == 1 or not dist.is_initialized() or not stats:
        return stats
    keys = sorted(stats)
    t = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=device)  # [K]
    dist.all_reduce(t)
    return {k: float(v) / world for k, v in zip(keys, t.tolist())}


def _maybe_crash(cfg: Config, iteration: int, rank: int, run_dir: str) -> None:
    t = cfg.train
    if t.crash_at_iter is None or iteration != t.crash_at_iter or rank != t.crash_rank:
        return
    marker = storage.join(run_dir, CRASH_MARKER.format(iteration))  # beside the checkpoints, even in S3
    if storage.exists(marker):
        return
    storage.write_text(marker, str(time.time()))
    time.sleep(CRASH_GRACE_S)
    os._exit(1)  # a hard death, as a killed process: no exception, no cleanup


def _report(metrics: dict[str, Any], parts: WorkerParts, progress: dict[str, Any],
            local_dir: Path | None = None, local_logger: tracking.RunLogger | None = None,
            extra_dir: Path | None = None, with_checkpoint: bool = False) -> None:
    """`ray.train.report` on every rank (a barrier); rank 0 attaches the checkpoint.

    num_workers=0 (in-process) runs only: `local_dir` is where checkpoints are written and kept,
    since that mode does not copy reported checkpoints to storage, and `local_logger` logs the
    `train/` metrics that the (absent) controller callback would.
    """
    if local_logger is not None:  # num_workers=0: no controller to run ReportToMlflow
        local_logger.log_metrics(tracking.step_metrics(metrics), step=int(metrics["iteration"]))
    if not with_checkpoint:
        ray.train.report(metrics)
        return
    rng = all_gather(capture_rng(), parts.world)
    if parts.rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    dir_name = f"iter_{progress['iteration']:07d}"
    with tempfile.TemporaryDirectory() as tmp:
        d = local_dir / dir_name if local_dir is not None else Path(tmp)
        save_checkpoint(d, model=parts.model, optimizer=parts.optimizer, scheduler=parts.scheduler,
                        progress=progress, rng=rng, config=parts.cfg.to_dict())
        if extra_dir is not None:
            shutil.copytree(extra_dir, d, dirs_exist_ok=True)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d),
                         checkpoint_dir_name=dir_name)


def _restore(parts: WorkerParts) -> dict[str, Any]:
    """The progress record: fresh, or the one of the checkpoint Ray handed over (then restored)."""
    progress = {"iteration": 0, "epoch": 0, "train_time": 0.0, "skipped_steps": 0, "bad_images": 0,
                "resumes": []}
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return progress
    with ckpt.as_directory() as d:
        state = load_checkpoint(d, model=parts.model, optimizer=parts.optimizer,
                                scheduler=parts.scheduler, map_location=parts.device)
    progress = dict(state["progress"])
    progress["resumes"] = [*progress["resumes"], progress["iteration"]]
    restore_rng(state["rng"][parts.rank])
    return progress


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker: restore, train to the last iteration, evaluate, final report."""
    started = time.perf_counter()
    cfg = Config.from_dict(config["cfg"])
    local_dir = Path(config["local_dir"]) if config.get("local_dir") else None
    local_logger = config.get("local_logger")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    seed_everything(cfg.train.seed)  # the same initial weights on every rank
    parts = build_parts(cfg, rank=rank, world=world, device=device)
    parts.model = ray.train.torch.prepare_model(
        parts.model, move_to_device=False,
        parallel_strategy_kwargs={"find_unused_parameters": cfg.train.find_unused_parameters})
    seed_everything(derive_seed(cfg.train.seed, rank))  # per-rank streams from here on
    progress = _restore(parts)
    live = rank == 0 and config.get("live_progress", False)  # the driver has a terminal
    # In a Ray worker the driver draws the bar (tqdm_ray); in process (num_workers=0), tqdm itself.
    bar = (tqdm_ray.tqdm if ray.is_initialized() else partial(tqdm, file=sys.stderr, dynamic_ncols=True))
    shown = TrainProgress(total_iterations(cfg.train, parts.iters_per_epoch), progress["iteration"],
                          cfg.train.batch_size * world, bar if live else None)
    ready = time.perf_counter()
    _train(parts, progress, config["run_dir"], local_dir, local_logger, shown)
    shown.close()
    # this attempt's phases (a restarted worker's count from its restart), for `run.phase_times`
    phases = {WORKER_SETUP: ready - started, TRAINING: time.perf_counter() - ready}
    _final_evaluation(parts, progress, local_dir, local_logger, phases)


def _train(parts: WorkerParts, progress: dict[str, Any], run_dir: Path, local_dir: Path | None,
           local_logger: tracking.RunLogger | None, shown: TrainProgress) -> None:
    """`train_step` from `progress["iteration"]` to the last iteration, logging and checkpointing."""
    cfg, ipe = parts.cfg, parts.iters_per_epoch
    total = total_iterations(cfg.train, ipe)
    window: list[dict[str, Any]] = []  # the steps' stats, 0-d tensors until logged
    it = progress["iteration"]
    while it < total:
        epoch, start = divmod(it, ipe)
        for batch in parts.loader(epoch, start):
            _maybe_crash(cfg, it, parts.rank, run_dir)
            t0 = time.perf_counter()
            images, targets = parts.to_device(batch)
            progress["bad_images"] = progress.get("bad_images", 0) + batch.bad_images  # older checkpoints lack it
            stats = train_step(parts.model, images, targets, parts.assign_fn, parts.optimizer,
                               losses_fn=parts.losses_fn, weights=parts.weights,
                               grad_clip=cfg.train.grad_clip, amp=cfg.train.amp)
            stats["lr"] = parts.optimizer.param_groups[0]["lr"]
            parts.scheduler.step()
            progress["train_time"] += time.perf_counter() - t0
            progress["skipped_steps"] += int(stats["skipped"])
            it += 1
            progress.update(iteration=it, epoch=it // ipe)
            window.append(stats)
            if parts.rank == 0:
                shown.step()
            log_now = it % cfg.train.log_every == 0 or it == total
            ckpt_now = it % cfg.train.checkpoint_every == 0 and it < total
            if log_now or ckpt_now:
                metrics = _window_metrics(window, progress, parts.world, parts.device)
                if parts.rank == 0 and log_now:
                    shown.window(metrics, progress["train_time"])
                window = []
                _report(metrics, parts, progress, local_dir, local_logger, with_checkpoint=ckpt_now)
            if cfg.eval.eval_every and it % cfg.eval.eval_every == 0 and it < total:
                _periodic_evaluation(parts, progress, local_dir, local_logger)
            if it >= total:
                break


def _periodic_evaluation(parts: WorkerParts, progress: dict[str, Any], local_dir: Path | None,
                         local_logger: tracking.RunLogger | None) -> None:
    """Every metric of the final evaluation but fps (timing is the final evaluation's job), at
    this iteration; the step's random state is left as it was, so the run's result does not
    depend on whether or how often it evaluates."""
    cfg = parts.cfg
    rng = capture_rng()
    metrics = evaluate_model(parts.model, parts.val_set, replace(cfg.eval, fps_runs=0), parts.device,
                             batch_size=cfg.train.batch_size, amp=cfg.train.amp, rank=parts.rank,
                             world=parts.world, threads=cfg.train.cpus_per_worker)
    restore_rng(rng)
    _report({"iteration": progress["iteration"], "epoch": progress["epoch"], **metrics,
             tracking.PERIODIC_EVAL_KEY: 1}, parts, progress, local_dir, local_logger)


def _final_evaluation(parts: WorkerParts, progress: dict[str, Any], local_dir: Path | None,
                      local_logger: tracking.RunLogger | None, phases: dict[str, float]) -> None:
    """Evaluate on the validation set and report the final checkpoint with the outputs in it."""
    cfg, rank = parts.cfg, parts.rank
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir:
        final = evaluate_model(parts.model, parts.val_set, cfg.eval, parts.device,
                               batch_size=cfg.train.batch_size, amp=cfg.train.amp, rank=rank,
                               world=parts.world, threads=cfg.train.cpus_per_worker,
                               out_dir=out_dir if rank == 0 else None)
        metrics = {"iteration": progress["iteration"], **final, "train_time": progress["train_time"],
                   "train/skipped_steps": progress["skipped_steps"],
                   "train/restarts": len(progress["resumes"]),
                   "train/resumed_from": progress["resumes"][-1] if progress["resumes"] else -1,
                   **phases, EVALUATION: time.perf_counter() - started}
        if rank == 0:
            Path(out_dir, METRICS_FILE).write_text(json.dumps(metrics, indent=1))
        _report(metrics, parts, progress, local_dir, local_logger, extra_dir=Path(out_dir),
                with_checkpoint=True)


def _window_metrics(window: list[dict[str, Any]], progress: dict[str, Any], world: int,
                    device: torch.device) -> dict[str, Any]:
    """Means over the logging window (finite steps only), averaged over ranks, as `train/…`."""
    window = stats_to_floats(window)  # the window's one device-to-host transfer
    done = [s for s in window if not s["skipped"]]
    keys = sorted({k for s in window for k in s} - {"skipped"})
    local = {k: sum(s[k] for s in done) / len(done) if done else float("nan") for k in keys}
    local[BAD_IMAGES] = float(progress.get("bad_images", 0))  # this rank's, since the start
    mean = _mean_over_ranks(local, world, device)
    bad_images = round(mean.pop(BAD_IMAGES) * world)  # all ranks'
    return {"iteration": progress["iteration"], "epoch": progress["epoch"],
            **{f"train/{k}": v for k, v in mean.items()},
            "train/skipped_steps": progress["skipped_steps"], "train/bad_images": bad_images}
