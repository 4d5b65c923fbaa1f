"""One training run on Ray Train (V2 API), tracked in MLflow: `run_training(cfg) -> dict`.

Driver side (`run_training`, callable from a CLI or from inside a Ray Tune trial):
  1. idempotency: a FINISHED MLflow run tagged with this Ray run name is returned as is; an
     unfinished one (driver restarted) is reopened instead of duplicated;
  2. MLflow run (child of `parent_run_id`), params = `Config.flat()`, tags, resolved config;
  3. `TorchTrainer(...).fit()`: gloo on CPU, NCCL on GPU; `FailureConfig(max_failures)` restarts
     a dead worker group from the last registered checkpoint; `ReportToMlflow` (controller side)
     logs rank 0's losses and LR per logging step;
  4. final metrics (`segm/…`, `bbox/…`, `fps`, `num_anchors`, `train_time`) and artifacts (config,
     COCO results, overlays, final `model.pt`) logged from the final checkpoint; run FINISHED.
  Ray runs are keyed by `(storage_path, name)`: the same name resumes (or returns) that run.

Worker side (`train_loop_per_worker`): build data, model, optimizer, LR schedule; restore the
latest checkpoint if Ray hands one over (model, optimizer, scheduler, iteration, per-rank RNG);
then `train_step` until the last iteration, reporting every `log_every` iterations, with a
checkpoint every `checkpoint_every`; finally evaluation (val predictions sharded over ranks,
metrics on rank 0) and a final report carrying the final checkpoint.

Data reaches workers as per-worker PyTorch DataLoaders over a deterministic shard of the
dataset (`pipeline.shards`) rather than Ray Data shards: the order is a pure function of
(seed, epoch), every sample has its own augmentation seed, and the loader position is just the
iteration, which is what makes an interrupted run resume to bit-identical weights. See
docs/benchmarks.md ("data path") for the measured comparison.

Fault injection (tests): `train.crash_at_iter = K` makes rank `train.crash_rank` exit hard
(`os._exit`) right before step K, once: a marker file in the run's storage directory stops the
restarted worker from crashing again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from pipeline import tracking
from pipeline.checkpoint import (CONFIG_FILE, MODEL_FILE, STATE_FILE, capture_rng, load_checkpoint,
                                 restore_rng, save_checkpoint, seed_everything)
from pipeline.config import Config
from pipeline.datasets import dataset_dir
from pipeline.precompute import ensure_precomputed
from pipeline.ray_utils import init_ray, worker_runtime_env
from pipeline.shards import derive_seed
from pipeline.train import total_iterations, train_step
from pipeline.validate import all_gather, evaluate_model
from pipeline.worker import WorkerParts, build_parts

CRASH_MARKER = "crash_injected_at_{}"
# The controller collects reports by polling (2 s by default): wait a little longer before the
# injected crash so that the checkpoint reported just before it is registered.
CRASH_GRACE_S = 3.0
METRICS_FILE = "metrics.json"
LOCAL_CHECKPOINTS = "local_checkpoints"  # num_workers=0 runs keep their checkpoints here
CONFIG_HASH_TAG = "maskaware.config_hash"  # a run name is only ever resumed with its own config


# --- worker ----------------------------------------------------------------------------------

def _mean_over_ranks(stats: dict[str, float], world: int, device: torch.device) -> dict[str, float]:
    if world == 1 or not dist.is_initialized() or not stats:
        return stats
    keys = sorted(stats)
    t = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=device)  # [K]
    dist.all_reduce(t)
    return {k: float(v) / world for k, v in zip(keys, t.tolist())}


def _maybe_crash(cfg: Config, iteration: int, rank: int, run_dir: Path) -> None:
    t = cfg.train
    if t.crash_at_iter is None or iteration != t.crash_at_iter or rank != t.crash_rank:
        return
    marker = run_dir / CRASH_MARKER.format(iteration)
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(time.time()))
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
        local_logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("train/")},
                                 step=int(metrics["iteration"]))
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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker: restore, train to the last iteration, evaluate, final report."""
    cfg = Config.from_dict(config["cfg"])
    run_dir = Path(config["run_dir"])
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
    ipe = parts.iters_per_epoch
    total = total_iterations(cfg.train, ipe)
    progress = {"iteration": 0, "epoch": 0, "train_time": 0.0, "skipped_steps": 0, "resumes": []}
    seed_everything(derive_seed(cfg.train.seed, rank))  # per-rank streams from here on
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = load_checkpoint(d, model=parts.model, optimizer=parts.optimizer,
                                    scheduler=parts.scheduler, map_location=device)
        progress = dict(state["progress"])
        progress["resumes"] = [*progress["resumes"], progress["iteration"]]
        restore_rng(state["rng"][rank])
    window: list[dict[str, float]] = []
    it = progress["iteration"]
    while it < total:
        epoch, start = divmod(it, ipe)
        for batch in parts.loader(epoch, start):
            _maybe_crash(cfg, it, rank, run_dir)
            t0 = time.perf_counter()
            images, targets = parts.to_device(batch)
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
            log_now = it % cfg.train.log_every == 0 or it == total
            ckpt_now = it % cfg.train.checkpoint_every == 0 and it < total
            if log_now or ckpt_now:
                metrics = _window_metrics(window, progress, world, device)
                window = []
                _report(metrics, parts, progress, local_dir, local_logger, with_checkpoint=ckpt_now)
            if it >= total:
                break
    with tempfile.TemporaryDirectory() as out_dir:
        final = evaluate_model(parts.model, parts.val_set, cfg.eval, device,
                               batch_size=cfg.train.batch_size, amp=cfg.train.amp, rank=rank,
                               world=world, out_dir=out_dir if rank == 0 else None)
        metrics = {"iteration": it, **final, "train_time": progress["train_time"],
                   "train/skipped_steps": progress["skipped_steps"],
                   "train/restarts": len(progress["resumes"]),
                   "train/resumed_from": progress["resumes"][-1] if progress["resumes"] else -1}
        if rank == 0:
            Path(out_dir, METRICS_FILE).write_text(json.dumps(metrics, indent=1))
        _report(metrics, parts, progress, local_dir, local_logger, extra_dir=Path(out_dir),
                with_checkpoint=True)


def _window_metrics(window: list[dict[str, float]], progress: dict[str, Any], world: int,
                    device: torch.device) -> dict[str, Any]:
    """Means over the logging window (finite steps only), averaged over ranks, as `train/…`."""
    done = [s for s in window if not s["skipped"]]
    keys = sorted({k for s in window for k in s} - {"skipped"})
    local = {k: sum(s[k] for s in done) / len(done) if done else float("nan") for k in keys}
    mean = _mean_over_ranks(local, world, device)
    return {"iteration": progress["iteration"], "epoch": progress["epoch"],
            **{f"train/{k}": v for k, v in mean.items()},
            "train/skipped_steps": progress["skipped_steps"]}


# --- driver ----------------------------------------------------------------------------------

def cell_key(cfg: Config) -> str:
    """Short stable hash of everything that changes the result (not tracking/sweep settings)."""
    d = cfg.to_dict()
    d.pop("tracking", None)
    d.pop("sweep", None)
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def default_run_name(cfg: Config) -> str:
    return f"{cfg.train.assigner}-s{cfg.data.scale}-seed{cfg.train.seed}-{cell_key(cfg)}"


def _scaling(cfg: Config) -> ScalingConfig:
    t = cfg.train
    per_worker = {"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})}
    return ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                         resources_per_worker=per_worker)


def _summary(run, name: str) -> dict[str, Any]:
    return {"run_id": run.info.run_id, "name": name, "metrics": dict(run.data.metrics),
            "checkpoint": run.data.tags.get("maskaware.checkpoint"), "reused": True}


def run_training(cfg: Config, *, parent_run_id: str | None = None, run_name: str | None = None,
                 tags: dict[str, Any] | None = None, callbacks: list | None = None) -> dict[str, Any]:
    """Train, evaluate and track one configuration; returns {run_id, name, metrics, checkpoint}.

    Works standalone (starts and stops a local Ray cluster when none is up) and inside a Tune
    trial (Ray already up; pass a deterministic `run_name`, e.g. from the trial id, and Tune's
    `TuneReportCallback` in `callbacks`).
    """
    name = run_name or default_run_name(cfg)
    storage = str(Path(cfg.train.storage_path).expanduser().resolve())
    key = {tracking.RAY_RUN_TAG: name}
    config_hash = cell_key(cfg)
    done = tracking.find_run(cfg.tracking, key)
    unfinished = tracking.find_run(cfg.tracking, key, statuses=("RUNNING", "FAILED", "KILLED"))
    for old in (done, unfinished):
        if old is not None and old.data.tags.get(CONFIG_HASH_TAG, config_hash) != config_hash:
            raise ValueError(f"run name {name!r} already belongs to MLflow run {old.info.run_id} "
                             "with another configuration; pick another run name")
    if done is not None:
        return _summary(done, name)
    run_tags = {**tracking.run_tags(cfg), **key, "maskaware.storage": storage,
                CONFIG_HASH_TAG: config_hash, tracking.CELL_KEY_TAG: config_hash, **(tags or {})}
    logger = tracking.open_run(cfg.tracking, run_name=name, tags=run_tags,
                               parent_run_id=parent_run_id,
                               resume_run_id=unfinished.info.run_id if unfinished else None)
    logger.log_params(cfg.flat())
    logger.log_dict(cfg.to_dict(), "config/config.json")
    dataset_dir(cfg.data)  # generate the synthetic data once, here, not in every worker
    local = cfg.train.num_workers == 0  # in-process: no cluster, no controller, no callbacks
    started = False if local else init_ray()
    if cfg.data.integrals == "parquet":  # the tables the loaders read (skipped when already there)
        ensure_precomputed(cfg.data)
    t0 = time.time()
    try:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"cfg": cfg.to_dict(), "run_dir": str(Path(storage) / name),
                               "local_dir": str(Path(storage) / name / LOCAL_CHECKPOINTS)
                               if local else None,
                               "local_logger": logger if local else None},
            scaling_config=_scaling(cfg),
            torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
            run_config=RunConfig(
                name=name, storage_path=storage,
                failure_config=FailureConfig(max_failures=cfg.train.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                callbacks=[tracking.ReportToMlflow(logger.uri, logger.run_id), *(callbacks or [])],
                worker_runtime_env=worker_runtime_env()))
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"Ray Train run {name} finished without a final checkpoint")
        metrics = dict(result.metrics or {})
        metrics["wall_time"] = time.time() - t0
        logger.log_metrics(metrics, step=int(metrics.get("iteration", 0)))
        logger.set_tags({k: v for k, v in metrics.items() if isinstance(v, str)})
        with result.checkpoint.as_directory() as d:
            _log_final_artifacts(logger, Path(d))
        logger.set_tags({"maskaware.checkpoint": result.checkpoint.path})
        logger.finish("FINISHED")
    except BaseException:
        logger.finish("FAILED")
        raise
    finally:
        if started:
            ray.shutdown()
    return {"run_id": logger.run_id, "name": name, "metrics": metrics,
            "checkpoint": result.checkpoint.path, "reused": False}


def _log_final_artifacts(logger: tracking.RunLogger, d: Path) -> None:
    logger.log_artifact(d / MODEL_FILE, "checkpoint")
    for p in sorted(d.iterdir()):
        if p.name in (MODEL_FILE, STATE_FILE, CONFIG_FILE):
            continue
        logger.log_artifact(p, "evaluation" if p.is_file() else p.name)
