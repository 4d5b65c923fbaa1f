"""One training run on Ray Train (V2 API), tracked in MLflow: `run_training(cfg) -> dict`.

Callable from a CLI or from inside a Ray Tune trial:
  1. idempotency: a FINISHED MLflow run tagged with this Ray run name is returned as is; an
     unfinished one (driver restarted) is reopened instead of duplicated;
  2. MLflow run (child of `parent_run_id`), params = `Config.flat()`, tags, resolved config;
  3. `TorchTrainer(train_loop_per_worker).fit()` (`pipeline.train.loop`): gloo on CPU, NCCL on
     GPU; `FailureConfig(max_failures)` restarts a dead worker group from the last registered
     checkpoint; `ReportToMlflow` (controller side) logs rank 0's losses and LR per logging step;
  4. final metrics (`segm/…`, `bbox/…`, `fps`, `num_anchors`, `train_time`) and artifacts (config,
     COCO results, overlays, final `model.pt`) logged from the final checkpoint; run FINISHED.
  Ray runs are keyed by `(storage_path, name)`: the same name resumes (or returns) that run.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from pipeline import tracking
from pipeline.config import Config
from pipeline.data.datasets import dataset_dir
from pipeline.data.precompute import ensure_precomputed
from pipeline.eval.model_files import CONFIG_FILE, MODEL_FILE
from pipeline.ray_utils import init_ray, worker_runtime_env
from pipeline.train.checkpoint import STATE_FILE
from pipeline.train.loop import train_loop_per_worker

LOCAL_CHECKPOINTS = "local_checkpoints"  # num_workers=0 runs keep their checkpoints here
CONFIG_HASH_TAG = "maskaware.config_hash"  # a run name is only ever resumed with its own config


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
    done, unfinished = _earlier_runs(cfg, key, name, config_hash)
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
    if cfg.data.source == "parquet" or cfg.data.integrals == "parquet":  # made once, here, not per worker
        ensure_precomputed(cfg.data)
    t0 = time.time()
    try:
        result = _trainer(cfg, name, storage, logger, local, callbacks).fit()
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


def _earlier_runs(cfg: Config, key: dict[str, str], name: str, config_hash: str):
    """(the FINISHED MLflow run of this Ray run name, an unfinished one); each may be None."""
    done = tracking.find_run(cfg.tracking, key)
    unfinished = tracking.find_run(cfg.tracking, key, statuses=("RUNNING", "FAILED", "KILLED"))
    for old in (done, unfinished):
        if old is not None and old.data.tags.get(CONFIG_HASH_TAG, config_hash) != config_hash:
            raise ValueError(f"run name {name!r} already belongs to MLflow run {old.info.run_id} "
                             "with another configuration; pick another run name")
    return done, unfinished


def _trainer(cfg: Config, name: str, storage: str, logger: tracking.RunLogger, local: bool,
             callbacks: list | None) -> TorchTrainer:
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.to_dict(), "run_dir": str(Path(storage) / name),
                           "local_dir": str(Path(storage) / name / LOCAL_CHECKPOINTS) if local else None,
                           "local_logger": logger if local else None},
        scaling_config=_scaling(cfg),
        torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
        run_config=RunConfig(
            name=name, storage_path=storage,
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[tracking.ReportToMlflow(logger.uri, logger.run_id), *(callbacks or [])],
            worker_runtime_env=worker_runtime_env()))


def _log_final_artifacts(logger: tracking.RunLogger, d: Path) -> None:
    logger.log_artifact(d / MODEL_FILE, "checkpoint")
    for p in sorted(d.iterdir()):
        if p.name in (MODEL_FILE, STATE_FILE, CONFIG_FILE):
            continue
        logger.log_artifact(p, "evaluation" if p.is_file() else p.name)
