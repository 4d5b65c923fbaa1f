"""One training run on Ray Train (V2 API), tracked in MLflow: `run_training(cfg) -> dict`.

Callable from a CLI or from inside a Ray Tune trial:
  1. idempotency: a FINISHED MLflow run tagged with this Ray run name is returned as is; an
     unfinished one (driver restarted) is reopened instead of duplicated;
  2. MLflow run (child of `parent_run_id`) named for people (`s128 · maIoU · seed 0`), with a
     description, params = `Config.flat()`, tags, resolved config (`config/config.json`, and
     `config/config.yaml`, which `--config` takes back), and the train and val annotation files
     as its data inputs (`pipeline.tracking_view`);
  3. `TorchTrainer(train_loop_per_worker).fit()` (`pipeline.train.loop`): gloo on CPU, NCCL on
     GPU; `FailureConfig(max_failures)` restarts a dead worker group from the last registered
     checkpoint; `ReportToMlflow` (controller side) logs rank 0's losses and LR per logging step;
     MLflow's system-metrics monitor samples CPU / memory (GPU) meanwhile (`tracking.system_metrics`);
  4. final metrics (`segm/…`, `bbox/…`, per-class AP, `fps`, `num_anchors`, `train_time`) and
     artifacts (config, COCO results, overlays, final `model.pt`) logged from the final checkpoint,
     which also becomes the run's MLflow model (`pipeline.eval.mlflow_model`); run FINISHED.
  Ray runs are keyed by `(storage_path, name)`: the same name resumes (or returns) that run.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipeline import tracking
from pipeline import tracking_view as view
from pipeline.config import Config
from pipeline.config_files import config_yaml
from pipeline.data.datasets import dataset_dir, split_paths
from pipeline.data.precompute import ensure_precomputed
from pipeline.eval.mlflow_model import log_pyfunc_model
from pipeline.eval.model_files import CONFIG_FILE, MODEL_FILE
from pipeline.ray_utils import init_ray, prompt_train_controller, quiet_logs, worker_runtime_env
from pipeline.storage import is_uri, join, location_of, resolve_storage
from pipeline.train.checkpoint import STATE_FILE
from pipeline.train.loop import train_loop_per_worker
from pipeline.train.phases import phase_times
from pipeline.train.rendezvous import LoopbackTorchConfig

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
                 tags: dict[str, Any] | None = None, callbacks: list | None = None,
                 display_name: str | None = None, started: float | None = None) -> dict[str, Any]:
    """Train, evaluate and track one configuration; returns {run_id, name, metrics, checkpoint}.

    Works standalone (starts and stops a local Ray cluster when none is up) and inside a Tune
    trial (Ray already up; pass a deterministic `run_name`, e.g. from the trial id, and Tune's
    `TuneReportCallback` in `callbacks`). `run_name` names the Ray Train run; the MLflow run is
    named `display_name`, by default `s128 · maIoU · seed 0`. `started` (`time.time()`) is when
    the caller began this run, e.g. a trial's start; `time/cell` counts from it (default: now).
    """
    started = time.time() if started is None else started
    name = run_name or default_run_name(cfg)
    storage = resolve_storage(cfg.train.storage_path)
    local = cfg.train.num_workers == 0  # in-process: no cluster, no controller, no callbacks
    if local and is_uri(storage):
        raise ValueError(f"train.num_workers=0 keeps its checkpoints on this machine: train.storage_path "
                         f"must be a local path, not {storage!r}")
    key = {tracking.RAY_RUN_TAG: name}
    config_hash = cell_key(cfg)
    done, unfinished = _earlier_runs(cfg, key, name, config_hash)
    if done is not None:
        return _summary(done, name)
    logger, note = _open_run(cfg, name, storage, config_hash, tags, parent_run_id,
                             unfinished.info.run_id if unfinished else None, display_name)
    quiet_logs()
    ray_started = False if local else init_ray()
    if cfg.data.source == "parquet" or cfg.data.integrals == "parquet":  # made once, here, not per worker
        ensure_precomputed(cfg.data)
    t0 = time.time()
    try:
        with view.system_metrics(logger.uri, logger.run_id, cfg.tracking.system_metrics):
            result = _trainer(cfg, name, storage, logger, local, callbacks).fit()
        if result.checkpoint is None:
            raise RuntimeError(f"Ray Train run {name} finished without a final checkpoint")
        metrics = dict(result.metrics or {})
        metrics["wall_time"] = time.time() - t0
        logger.set_tags({k: v for k, v in metrics.items() if isinstance(v, str)})
        fitted = time.time()
        with result.checkpoint.as_directory() as d:
            _log_final_artifacts(logger, Path(d))
            log_pyfunc_model(logger.uri, logger.run_id, Path(d), cfg, step=int(metrics.get("iteration", 0)))
        now = time.time()
        metrics.update(phase_times(now - started, now - fitted, metrics))
        logger.log_metrics(metrics, step=int(metrics.get("iteration", 0)))
        checkpoint = location_of(result.checkpoint.filesystem, result.checkpoint.path)
        logger.set_tags({"maskaware.checkpoint": checkpoint,
                         view.NOTE_TAG: f"{note}\n\n{view.result_note(metrics)}"})
        logger.finish("FINISHED")
    except BaseException:
        logger.finish("FAILED")
        raise
    finally:
        if ray_started:
            ray.shutdown()
    return {"run_id": logger.run_id, "name": name, "metrics": metrics,
            "checkpoint": checkpoint, "reused": False}


def _open_run(cfg: Config, name: str, storage: str, config_hash: str, tags: dict[str, Any] | None,
              parent_run_id: str | None, resume_run_id: str | None,
              display_name: str | None) -> tuple[tracking.RunLogger, str]:
    """The run's MLflow run (reopened after a driver restart) with its tags, description, params,
    config and data inputs; and that description. Generates the synthetic data on first use."""
    variant = str((tags or {}).get("variant", ""))
    note = view.run_note(cfg, variant)
    run_tags = {**tracking.run_tags(cfg), tracking.RAY_RUN_TAG: name, "maskaware.storage": storage,
                CONFIG_HASH_TAG: config_hash, tracking.CELL_KEY_TAG: config_hash, view.NOTE_TAG: note,
                **(tags or {})}
    # The MLflow name is for people (`s128 · maIoU · seed 0`); the Ray run name stays a tag.
    display_name = display_name or view.run_display_name(cfg.data.scale, cfg.train.assigner,
                                                         cfg.train.seed, variant)
    logger = tracking.open_run(cfg.tracking, run_name=display_name, tags=run_tags,
                               parent_run_id=parent_run_id, resume_run_id=resume_run_id)
    logger.log_params(cfg.flat())
    logger.log_dict(cfg.to_dict(), "config/config.json")  # what jobs.evaluate reads
    logger.log_text(config_yaml(cfg), "config/config.yaml")  # what --config reads back
    root = dataset_dir(cfg.data)  # generate the synthetic data once, here, not in every worker
    view.log_data_inputs(logger.client, logger.run_id, {
        context: (f"{Path(root).name}/{split}", split_paths(cfg.data, split)[0])
        for context, split in (("training", "train"), ("validation", "val"))})
    return logger, note


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
    prompt_train_controller()
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.to_dict(), "run_dir": join(storage, name),
                           "live_progress": sys.stderr.isatty(),  # a live bar (else log lines)
                           "local_dir": str(Path(storage) / name / LOCAL_CHECKPOINTS) if local else None,
                           "local_logger": logger if local else None},
        scaling_config=_scaling(cfg),
        torch_config=LoopbackTorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
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
