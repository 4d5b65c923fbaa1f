"""The sweep runner: a Ray Tune grid of training runs under one MLflow parent run.

Shape (Ray 2.60, Train V2):
- every cell (`pipeline.sweep.grid`) is one Tune trial; the trial is a *function trainable* (`_trial`,
  the "trial driver") that calls `pipeline.train.run.run_training`, which launches one
  `TorchTrainer`. The driver holds one unit of the custom `trial_driver` resource and no CPU: with
  the default 1 CPU per trial, a 2-core machine livelocks (the driver takes the CPU its Train
  workers wait for). Per-trial CPUs/GPUs are the Train workers' (`TrainConfig`).
- standalone, the sweep starts a local Ray (all cores, a small object store, no dashboard,
  `trial_driver` = the concurrency limit); with `RAY_ADDRESS` set (as `ray job submit` does) it
  joins that cluster, whose head must advertise `trial_driver` (cluster.yaml does).
- MLflow is the record: a parent run per sweep; each trial's run is a child created by
  `run_training` with `parent_run_id` and the cell key as a tag. A trial whose cell already has
  a FINISHED child returns it without training, so `--resume` never trains or logs a cell twice,
  whatever Tune's own state says (after a hard crash Tune can rerun finished trials and lose
  their results). Tune's state is used only to schedule what is left.
- every path is absolute and outside the working directory (`pipeline.sweep.record`).
- fps is measured once all trials are done, cell after cell (`pipeline.sweep.timing`): never while
  another trial trains on the same cores.

The status table and the resume tests' fault injection are Tune callbacks (`pipeline.sweep.callbacks`).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import ray
from ray import tune

from pipeline import tracking
from pipeline import tracking_view as view
from pipeline.config import Config, SweepConfig
from pipeline.ray_utils import init_ray, quiet_logs
from pipeline.sweep.callbacks import TUNE_DIR, InterruptAfter, ShowStatus, trial_name
from pipeline.sweep.grid import Cell, cell_config, collapsed_rows, grid_cells
from pipeline.sweep.results import finished_results, missing_cells
from pipeline.sweep.status import StatusBoard
from pipeline.sweep.record import (KIND_SWEEP, KIND_TAG, KIND_TRIAL, SWEEP_TAG, SweepRecord,
                                   latest_sweep, new_sweep_name, sweep_dir, sweeps_root)
from pipeline.sweep.timing import time_cell, untimed_runs

log = logging.getLogger(__name__)

DRIVER_RESOURCE = "trial_driver"
EXIT_INTERRUPTED = 130  # what a shell reports for Ctrl-C
EXIT_FAILED = 1  # some trial raised, even after Tune's retries
# Tune's console output off (the status table replaces it): tracebacks only in error.txt, and the
# legacy engine, whose verbose=0 is silent (the new one still prints a header).
QUIET_TUNE_ENV = {"TUNE_PRINT_ALL_TRIAL_ERRORS": "0", "RAY_AIR_NEW_OUTPUT": "0"}


@dataclass
class SweepOutcome:
    record: SweepRecord
    complete: bool
    errors: dict[str, str]  # cell key -> error of the trials that failed (after Tune's retries)
    missing: list[str]  # keys of the cells without a FINISHED MLflow run

    @property
    def exit_code(self) -> int:
        return 0 if self.complete else EXIT_FAILED if self.errors else EXIT_INTERRUPTED


# --- the trial driver (runs in a Ray worker) -----------------------------------------------------

def _trial(config: dict, *, base: dict, sweep_name: str, parent_run_id: str, tracking_uri: str,
           experiment: str) -> None:
    started = time.time()  # the cell's wall time counts from here (`pipeline.train.phases`)
    quiet_logs()
    cell = Cell(**config["cell"])
    cfg = cell_config(Config.from_dict(base), cell, sweep_name)
    cfg = replace(cfg, tracking=replace(cfg.tracking, tracking_uri=tracking_uri, experiment=experiment))
    done = tracking.find_run(cfg.tracking, _cell_tags(sweep_name, cell), statuses=("FINISHED",))
    if done is not None:  # trained before an interruption: report it, do not train it again
        tune.report({**_numeric(done.data.metrics), "reused": 1.0})
        return
    from pipeline.train.run import run_training  # torch and the model only where a trial runs

    from ray.tune.integration.ray_train import TuneReportCallback  # rank 0's reports -> Tune results

    # The Ray Train run name is unique to the sweep: run_training resumes (or returns) a run of
    # the same name, which must never be another sweep's.
    result = run_training(cfg, parent_run_id=parent_run_id, run_name=f"{cell.key}@{sweep_name}",
                          tags=_cell_tags(sweep_name, cell), callbacks=[TuneReportCallback()],
                          started=started)
    tune.report({**_numeric(result["metrics"]), "reused": float(result["reused"])})


def _cell_tags(sweep_name: str, cell: Cell) -> dict[str, str]:
    return {SWEEP_TAG: sweep_name, KIND_TAG: KIND_TRIAL, tracking.CELL_KEY_TAG: cell.key, **cell.tags()}


def _numeric(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


# --- the sweep driver ------------------------------------------------------------------------------

def open_record(cfg: Config, preset: str, *, name: str | None = None, resume: bool = False) -> SweepRecord:
    """A new sweep's record, or (resume) the saved one; the saved config wins on resume."""
    if resume:
        name = name or cfg.sweep.name or latest_sweep(sweeps_root(cfg), preset)
        if name is None:
            raise ValueError(f"--resume: no sweep of preset {preset!r} under {sweeps_root(cfg)}")
        return SweepRecord.load(sweep_dir(cfg, name))
    name = name or cfg.sweep.name or new_sweep_name(preset)
    cfg = replace(cfg, sweep=replace(cfg.sweep, name=name))
    cells = grid_cells(cfg)
    if (sweep_dir(cfg, name) / "sweep.json").exists():
        raise ValueError(f"sweep {name!r} already exists under {sweeps_root(cfg)}; "
                         "pass --resume to continue it or another --name")
    uri, _ = tracking.get_or_create_experiment(cfg.tracking)  # once, before parallel writers
    record = SweepRecord(name=name, preset=preset, config=cfg.to_dict(),
                         cells=[c.to_dict() for c in cells], tracking_uri=uri,
                         experiment=cfg.tracking.experiment)
    record.save(sweep_dir(cfg, name))
    return record


def _parent_run(record: SweepRecord) -> tracking.RunLogger:
    base = record.base_config()
    tcfg = replace(base.tracking, tracking_uri=record.tracking_uri)
    if record.parent_run_id:
        return tracking.open_run(tcfg, run_name=record.name, resume_run_id=record.parent_run_id)
    sw = base.sweep
    note = (f"Sweep `{record.name}` of preset **{record.preset}**: {len(record.cells)} training runs "
            f"(scales {list(sw.scales)} × assigners {list(sw.assigners)} × seeds {list(sw.seeds)}"
            f"{f' × rows {list(sw.variants)}' if sw.variants else ''}), nested below this run. Its "
            "config is the artifact `config/config.json`; the report is under `report/`.")
    tags = {SWEEP_TAG: record.name, KIND_TAG: KIND_SWEEP, "preset": record.preset, view.NOTE_TAG: note}
    parent = tracking.open_run(tcfg, run_name=record.name, tags=tags)
    parent.log_params({"sweep.preset": record.preset, "sweep.cells": len(record.cells),
                       **shared_params(base, record.grid, record.name)})
    parent.log_dict(record.config, "config/config.json")
    return parent


def shared_params(base: Config, cells: list[Cell], sweep_name: str) -> dict:
    """The params every cell's run has in common (the grid's own `sweep.*` included): the parent
    must not show one cell's scale, assigner or seed as if they were the sweep's."""
    flats = [cell_config(base, c, sweep_name).flat() for c in cells]
    return {k: v for k, v in base.flat().items() if all(f.get(k) == v for f in flats)}


def _prepare_data(cfg: Config, local: bool) -> None:
    """Generate the built-in synthetic dataset once, here, rather than in racing trials; on this
    machine, check a given dataset before any trial starts (on a cluster only workers may see it)."""
    if cfg.data.data_dir is None:
        from pipeline.data.synthetic import ensure_synthetic

        print(f"  synthetic data: {ensure_synthetic(cfg.data, progress=True)}")
    elif local:
        from pipeline.data.datasets import check_paths

        check_paths(cfg.data)


def _driver_slots(cfg: Config, local: bool) -> int:
    """Concurrent trials: the preset's limit, on a local Ray also what the CPUs can hold."""
    want = cfg.sweep.max_concurrent_trials
    if not local:
        return want
    per_trial = max(1, cfg.train.num_workers) * cfg.train.cpus_per_worker
    return max(1, min(want, (os.cpu_count() or 1) // per_trial))


def _check_cluster(cfg: Config) -> None:
    have = ray.cluster_resources()
    if have.get(DRIVER_RESOURCE, 0) < 1:
        raise ValueError(
            f"the Ray cluster at {os.environ.get('RAY_ADDRESS')} has no {DRIVER_RESOURCE!r} resource: start "
            f"its head with --resources='{{\"{DRIVER_RESOURCE}\": 8}}' (cluster.yaml does)")
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) > 1 and "://" not in cfg.train.storage_path:
        # An error would be wrong for an NFS mount, which looks like any local path.
        print(f"warning: train.storage_path={cfg.train.storage_path!r} is a path and the cluster has "
              f"{len(alive)} nodes: unless it is shared storage (NFS) on every node, use s3:// or gs://")


def _tuner(record: SweepRecord, directory: Path, slots: int, resume: bool) -> tune.Tuner:
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=record.config, sweep_name=record.name,
                             parent_run_id=record.parent_run_id, tracking_uri=record.tracking_uri,
                             experiment=record.experiment),
        {DRIVER_RESOURCE: 1})
    path = directory / TUNE_DIR
    for name, value in QUIET_TUNE_ENV.items():  # set them to 1 to bring Tune's own output back
        os.environ.setdefault(name, value)
    if resume and tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    if path.exists():  # an unrestorable leftover (killed before Tune saved its state)
        path.rename(directory / f"{TUNE_DIR}-stale-{int(time.time())}")
    return tune.Tuner(
        trainable,
        param_space={"cell": tune.grid_search(record.cells)},
        tune_config=tune.TuneConfig(max_concurrent_trials=slots, trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_name),
        # verbose=0: the status table replaces Tune's own progress output
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(directory), verbose=0,
                                  failure_config=tune.FailureConfig(
                                      max_failures=record.base_config().sweep.trial_max_failures),
                                  callbacks=[InterruptAfter(), ShowStatus(_board(record), directory)]))


def _board(record: SweepRecord) -> StatusBoard:
    return StatusBoard([c.key for c in record.grid],
                       {c.key: cell_config(record.base_config(), c, record.name).train.max_iters for c in record.grid})


def run_sweep(cfg: Config, preset: str, *, name: str | None = None, resume: bool = False) -> SweepOutcome:
    """Run (or resume) a sweep to the end; the caller writes its report (`pipeline.report.build`)."""
    local = not os.environ.get("RAY_ADDRESS")
    if not resume:
        grid_cells(cfg)  # a bad grid or dataset fails before the sweep exists
        _prepare_data(cfg, local)
    record = open_record(cfg, preset, name=name, resume=resume)
    base = record.base_config()
    directory = sweep_dir(base, record.name)
    slots = _driver_slots(base, local)
    print(f"sweep {record.name}: {len(record.cells)} cells, up to {slots} at a time -> {directory}")
    for line in collapsed_rows(base):
        print(f"  {line}")
    print(f"  resume with: {resume_command(record)}")
    if resume:
        _prepare_data(base, local)
    owns_ray = init_ray(object_store_bytes=base.sweep.object_store_mb * 2**20,
                        resources={DRIVER_RESOURCE: slots}, log_to_driver=False)
    try:
        if not local:
            _check_cluster(base)
        parent = _parent_run(record)
        record.parent_run_id, record.status = parent.run_id, "running"
        record.save(directory)
        results = _tuner(record, directory, slots, resume).fit()
        errors = {trial_name(r): _one_line(r.error) for r in results if r.error is not None}
        _time_cells(record, base)
    finally:
        if owns_ray:
            ray.shutdown()
    missing = missing_cells(record, finished_results(record))
    complete = not missing
    record.status = "finished" if complete else "failed" if errors else "interrupted"
    record.save(directory)
    parent.finish("FINISHED" if complete else "FAILED" if errors else "KILLED")
    return SweepOutcome(record, complete, errors, missing)


def _time_cells(record: SweepRecord, base: Config) -> None:
    """fps of every finished cell, after all trials, one cell at a time on one Train worker's
    resources (`pipeline.sweep.timing`)."""
    if base.eval.fps_runs <= 0:
        return
    gpu = base.train.use_gpu
    task = ray.remote(num_cpus=base.train.cpus_per_worker, num_gpus=int(gpu))(time_cell)
    for run_id in untimed_runs(record):
        fps = ray.get(task.remote(record.tracking(), run_id, base.eval, "cuda" if gpu else "cpu"))  # one at a time
        print(f"  fps {fps['fps']:.1f} ({fps['setup']}) for run {run_id}")


def resume_command(record: SweepRecord) -> str:
    root = record.base_config().sweep.root
    where = "" if root == SweepConfig().root else f" --set sweep.root={root}"
    return f"python -m jobs.sweep --resume --name {record.name}{where}"


def _one_line(error: BaseException) -> str:
    lines = [ln for ln in str(error).strip().splitlines() if ln.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"
