"""MLflow tracking: the only module that imports mlflow.

Where runs go:
- `TrackingConfig.tracking_uri` when set, else `MLFLOW_TRACKING_URI`, else a local sqlite store
  at `~/.cache/maskaware/mlflow.db` (absolute `sqlite:////…` URI: MLflow 3 resolves a relative
  one against the process CWD, which differs between a job driver and its workers).
- Artifacts of a new experiment go to `TrackingConfig.artifact_location` when set, else next to
  a sqlite DB (`<db dir>/mlartifacts`), else wherever the tracking server puts them. MLflow's own
  default is `./mlruns` relative to the CWD, which is why it is always set for sqlite.

Who writes: one writer per run at a time, never a Train worker.
- The driver (`pipeline.train.run.run_training`, possibly inside a Tune trial) opens the run, logs
  params, tags, the final metrics and the artifacts, and closes it.
- `ReportToMlflow` is a `ray.train.UserCallback`: it runs in the Train controller actor and logs
  what rank 0 reports (losses, LR) per logging step. It survives worker restarts; after a restart
  the steps between the last checkpoint and the crash are logged a second time (same step keys).

Everything goes through an explicit `MlflowClient(uri)` and run id, never the fluent
`mlflow.start_run` global state, so the same code works in a driver, a Tune trial or an actor.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

import mlflow
import ray.train
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from pipeline.config import Config, TrackingConfig
from pipeline.tracking_view import label_experiment

DEFAULT_HOME = "~/.cache/maskaware"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
RAY_RUN_TAG = "maskaware.ray_run"  # name of the Ray Train run (storage_path/name) behind this run
CELL_KEY_TAG = "maskaware.cell_key"
_BATCH = 100  # MLflow's log_batch limit on params per call (metrics: 1000)
_PARAM_MAX = 6000  # MLflow's limit on a param value's length


def resolve_tracking_uri(tracking: TrackingConfig) -> str:
    """Config, then `MLFLOW_TRACKING_URI`, then the absolute default sqlite store."""
    uri = tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    db = Path(DEFAULT_HOME).expanduser().resolve() / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return sqlite_uri(db)


def sqlite_uri(path: str | os.PathLike) -> str:
    """`sqlite:////abs/path.db` for a file path (made absolute)."""
    return f"sqlite:///{Path(path).expanduser().resolve()}"


def _artifact_location(tracking: TrackingConfig, uri: str) -> str | None:
    if tracking.artifact_location:
        return str(Path(tracking.artifact_location).expanduser().resolve())
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        db = Path(uri[len("sqlite:///"):])
        return str(db.parent / "mlartifacts")
    return None  # a tracking server decides


def get_or_create_experiment(tracking: TrackingConfig) -> tuple[str, str]:
    """(tracking uri, experiment id); creates the experiment with an explicit artifact location.

    Call it once before launching parallel writers: creating a fresh sqlite DB runs migrations,
    and two processes doing that at once can race.
    """
    uri = resolve_tracking_uri(tracking)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(tracking.experiment)
    if exp is None:
        try:
            exp = client.get_experiment(client.create_experiment(
                tracking.experiment, artifact_location=_artifact_location(tracking, uri)))
        except mlflow.exceptions.MlflowException:
            exp = client.get_experiment_by_name(tracking.experiment)  # created meanwhile by another writer
            if exp is None:
                raise
    label_experiment(client, exp)  # kind, description, comparison view; no-op once labelled
    return uri, exp.experiment_id


def git_commit() -> str:
    """The commit of the code being run (`MASKAWARE_GIT_COMMIT` overrides, e.g. in a Ray job)."""
    if os.environ.get("MASKAWARE_GIT_COMMIT"):
        return os.environ["MASKAWARE_GIT_COMMIT"]
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(cfg: Config) -> dict[str, str]:
    """The tags every training run carries."""
    return {"scale": str(cfg.data.scale), "assigner": cfg.train.assigner,
            "seed": str(cfg.train.seed), "git_commit": git_commit()}


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The float-valued entries (bools and ints included); strings, lists and None dropped."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)):  # bools too
            out[k] = float(v)
        elif hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # numpy / torch scalars
            out[k] = float(v.item())
    return out


class RunLogger:
    """Writes to one MLflow run through an explicit client; picklable (the client is lazy)."""

    def __init__(self, uri: str, run_id: str):
        self.uri = uri
        self.run_id = run_id
        self._client: MlflowClient | None = None

    def __getstate__(self):
        return {"uri": self.uri, "run_id": self.run_id, "_client": None}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.uri)
        return self._client

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:_PARAM_MAX]) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + _BATCH])

    def log_metrics(self, metrics: dict[str, Any], step: int = 0) -> None:
        now = _now_ms()
        items = [Metric(k, v, now, int(step)) for k, v in _numeric(metrics).items()]
        for i in range(0, len(items), 10 * _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + 10 * _BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dict(self, d: dict, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, d, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(p), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    def metrics(self) -> dict[str, float]:
        """The latest value of every metric of the run."""
        return dict(self.client.get_run(self.run_id).data.metrics)


def _now_ms() -> int:
    return int(time.time() * 1000)


def open_run(tracking: TrackingConfig, *, run_name: str, tags: dict[str, Any] | None = None,
             parent_run_id: str | None = None, resume_run_id: str | None = None) -> RunLogger:
    """Start a run (a child of `parent_run_id` when given), or reopen `resume_run_id`."""
    uri, exp_id = get_or_create_experiment(tracking)
    client = MlflowClient(uri)
    all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    if resume_run_id:
        client.update_run(resume_run_id, status="RUNNING")
        logger = RunLogger(uri, resume_run_id)
        logger.set_tags(all_tags)
        return logger
    run = client.create_run(exp_id, tags=all_tags, run_name=run_name)
    return RunLogger(uri, run.info.run_id)


def find_run(tracking: TrackingConfig, tags: dict[str, str],
             statuses: Iterable[str] = ("FINISHED",)) -> Any | None:
    """The newest run of the experiment carrying all `tags` with one of `statuses`, or None.

    The idempotency helper: a resumed sweep looks up `{CELL_KEY_TAG: key}` and skips cells that
    already have a FINISHED run; `run_training` looks up its Ray run name to continue the same
    MLflow run after a driver restart instead of opening a duplicate.
    """
    uri = resolve_tracking_uri(tracking)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(tracking.experiment)
    if exp is None:
        return None
    clauses = [f"tags.`{k}` = '{_quote(v)}'" for k, v in tags.items()]
    wanted = set(statuses)
    for run in client.search_runs([exp.experiment_id], " and ".join(clauses),
                                  order_by=["attributes.start_time DESC"], max_results=50):
        if run.info.status in wanted:
            return run
    return None


def _quote(value: str) -> str:
    if "'" in value:
        raise ValueError(f"tag value {value!r} contains a quote, which MLflow filters cannot match")
    return value


def child_runs(tracking: TrackingConfig, parent_run_id: str) -> list:
    """All runs nested under `parent_run_id`, newest first."""
    uri, exp_id = get_or_create_experiment(tracking)
    return list(MlflowClient(uri).search_runs(
        [exp_id], f"tags.`{PARENT_TAG}` = '{_quote(parent_run_id)}'",
        order_by=["attributes.start_time DESC"]))


def download_artifact(tracking: TrackingConfig, run_id: str, artifact_path: str, dst: str | os.PathLike) -> Path | None:
    """One artifact of a run copied under `dst`, or None when the run has no such artifact."""
    client = MlflowClient(resolve_tracking_uri(tracking))
    try:
        return Path(client.download_artifacts(run_id, artifact_path, str(dst)))
    except (OSError, mlflow.exceptions.MlflowException):
        return None


PERIODIC_EVAL_KEY = "eval/periodic"  # marks a report that carries a mid-training evaluation


def step_metrics(reported: dict[str, Any], prefix: str = "train/") -> dict[str, Any]:
    """What one `ray.train.report` of rank 0 logs at its iteration: the `train/` entries, and
    every metric of a mid-training evaluation (under the final metrics' own names, so that
    MLflow draws each as a curve over iterations). The final report's metrics are logged once,
    by the driver, and not here."""
    if reported.get(PERIODIC_EVAL_KEY):
        return {k: v for k, v in _numeric(reported).items()
                if k not in (PERIODIC_EVAL_KEY, "iteration", "epoch") and v == v}  # v == v: not NaN
    return {k: v for k, v in reported.items() if k.startswith(prefix)}


class ReportToMlflow(ray.train.UserCallback):
    """Logs rank 0's `step_metrics` of every `ray.train.report` to one MLflow run.

    Runs in the Ray Train controller actor (one writer per run, whatever happens to workers).
    `step_key` names the reported entry used as the MLflow step.
    """

    def __init__(self, uri: str, run_id: str, prefix: str = "train/", step_key: str = "iteration"):
        self.logger = RunLogger(uri, run_id)
        self.prefix = prefix
        self.step_key = step_key

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if not metrics or not metrics[0]:
            return
        rank0 = metrics[0]
        wanted = step_metrics(rank0, self.prefix)
        if wanted:
            self.logger.log_metrics(wanted, step=int(rank0.get(self.step_key, 0)))
