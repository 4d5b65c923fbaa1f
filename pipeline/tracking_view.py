"""What a person sees of our runs in the MLflow 3 UI: the experiment's kind and description, short
run names and descriptions, the data a run read, and the machine's load while it trained.

The second module allowed to import mlflow (`pipeline.tracking` writes; this one labels), kept apart
so that the writer stays small. Every call takes an explicit client or tracking URI, as there.

- Experiment kind: the `mlflow.experimentKind` tag says `custom_model_development` (the value
  MLflow's UI writes for "Model training"; MLflow's tools read it). MLflow 3.17's UI itself opens
  an experiment on its GenAI "Overview" page unless the browser's "GenAI / Model training" switch
  says otherwise (seen in a headless browser: the tag alone does not move it), so `runs_url` is
  the link that opens the runs: `?workflowType=machine_learning` flips that switch.
- A saved view (`COMPARE_VIEW`): the UI's own shared-view tag, `mlflow.sharedViewState.<key>`,
  holding the runs table's state: assigner, scale and seed columns, mask/box AP and oLRP, sorted
  by mask AP. `runs_url` opens it (`viewStateShareKey=<key>`).
- Descriptions are the `mlflow.note.content` tag (markdown) of a run or an experiment: what the UI
  shows under "Description".
- Data: each split's annotation file as a run input (`mlflow.data`, context `training` /
  `validation`), named `<dataset folder>/<split>`, its digest the file's SHA-256, so two runs on
  other data (or edited labels) differ in the runs table's "Dataset" column. The images themselves
  are not hashed: the annotation file lists them by name and size.
- System metrics: `system/cpu_utilization_percentage`, `system/system_memory_usage_megabytes`, … (and
  `system/gpu_*` where `pynvml` finds a GPU) sampled every `SAMPLING_S` seconds by MLflow's own
  monitor, in the process that drives the run (on one machine that is the machine's load; on a
  cluster, the driver node's).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

from pipeline.config import ASSIGNER_TABLE, Config

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"  # the kind the UI's "Model training" stands for
NOTE_TAG = "mlflow.note.content"  # a run's or an experiment's description (markdown)
DATA_CONTEXT_TAG = "mlflow.data.context"
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + key: a view of the runs table (UI state as JSON)
COMPARE_VIEW = "maskaware-compare"
COMPARE_COLUMNS = ("params.`train.assigner`", "params.`data.scale`", "params.`train.seed`",
                   "metrics.`segm/AP`", "metrics.`bbox/AP`", "metrics.`segm/oLRP`")
SAMPLING_S = 10.0  # MLflow's default; MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it
_HASH_CHUNK = 1 << 20
EXPERIMENT_NOTE = (
    "Training runs of the maskaware ablation (YOLACT with pluggable anchor assigners). Each run is "
    "one (scale, assigner, seed), named like `s128 · maIoU · seed 0`; a sweep is a parent run with "
    "one child per cell. [Compare the runs]({link}): assigner, scale, seed, mask and box AP, sorted "
    "by mask AP; tick runs, then **Compare**.")


def label_experiment(client: MlflowClient, experiment) -> None:
    """Give an experiment the training kind, a description and the comparison view, each unless it
    has one already (a description edited in the UI stays)."""
    tags = experiment.tags or {}
    if tags.get(EXPERIMENT_KIND_TAG) is None:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    if not tags.get(NOTE_TAG):
        link = runs_url("", experiment.experiment_id).lstrip("/")  # relative: `#/experiments/…`
        client.set_experiment_tag(experiment.experiment_id, NOTE_TAG, EXPERIMENT_NOTE.format(link=link))
    if tags.get(SHARED_VIEW_TAG + COMPARE_VIEW) is None:
        view = {"selectedColumns": list(COMPARE_COLUMNS), "orderByKey": "metrics.`segm/AP`", "orderByAsc": False}
        client.set_experiment_tag(experiment.experiment_id, SHARED_VIEW_TAG + COMPARE_VIEW, json.dumps(view))


def runs_url(server: str, experiment_id: str) -> str:
    """The UI link that opens the experiment on its runs, in the comparison view."""
    return (f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={COMPARE_VIEW}")


def assigner_short(assigner: str) -> str:
    """`maIoU` for atss_maiou, `fixed IoU` for fixed_iou: the table's label without the family."""
    spec = ASSIGNER_TABLE.get(assigner)
    return spec.label.removeprefix("ATSS w. ").removesuffix(" threshold") if spec else assigner


def run_display_name(scale: int, assigner: str, seed: int, variant: str = "") -> str:
    """`s128 · maIoU · seed 0` (`s550 · maIoU · carafe · seed 0` for a model-option row): short
    enough for the runs table's name column, and what tells runs of one sweep apart."""
    parts = [f"s{scale}", assigner_short(assigner)] + ([variant] if variant else [])
    return " · ".join(parts + [f"seed {seed}"])


def run_note(cfg: Config, variant: str = "") -> str:
    """A training run's description: what it trains, on what, and where its config is."""
    t, spec = cfg.train, ASSIGNER_TABLE.get(cfg.train.assigner)
    length = f"{t.max_iters} iterations" if t.max_iters else f"{t.epochs} epochs"
    where = f"{max(t.num_workers, 1)} {'GPU' if t.use_gpu else 'CPU'} worker(s)"
    data = f"`{cfg.data.data_dir}`" if cfg.data.data_dir else "the built-in synthetic dataset"
    return (f"**{spec.label if spec else t.assigner}**{f' + {variant}' if variant else ''} at "
            f"{cfg.data.scale} px, seed {t.seed}: YOLACT {cfg.model.backbone}, {length}, batch "
            f"{t.batch_size} per worker on {where}, data {data}. The resolved config is the "
            "artifact `config/config.json`; the model, loadable with `mlflow.pyfunc.load_model`, "
            "is in the experiment's **Models**.")


def result_note(metrics: dict) -> str:
    """One line of final numbers, appended to the description of a finished run."""
    names = (("segm/AP", "mask AP"), ("bbox/AP", "box AP"), ("segm/oLRP", "mask oLRP"), ("fps", "fps"))
    parts = [f"{label} {metrics[key]:.1f}" for key, label in names
             if isinstance(metrics.get(key), (int, float))]
    return "Result: " + " · ".join(parts) + "." if parts else ""


def dataset_digest(path: str | Path) -> str | None:
    """SHA-256 (first 16 hex digits) of a file, or None when this process cannot read it."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
                h.update(chunk)
    except OSError:
        return None  # e.g. data only the cluster's workers see: MLflow digests the name and path
    return h.hexdigest()[:16]


def log_data_inputs(client: MlflowClient, run_id: str, files: dict[str, tuple[str, str]]) -> None:
    """`files`: context (`training`, `validation`) -> (dataset name, annotation file path)."""
    inputs = []
    for context, (name, path) in files.items():
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": two local kinds, same class
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(Path(path).expanduser().resolve()))
        dataset = MetaDataset(source, name=name, digest=dataset_digest(path))
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), [InputTag(DATA_CONTEXT_TAG, context)]))
    client.log_inputs(run_id, datasets=inputs)


@contextlib.contextmanager
def system_metrics(uri: str, run_id: str, enabled: bool = True) -> Iterator[None]:
    """MLflow's system-metrics monitor on `run_id` for the duration of the block (a thread)."""
    if not enabled:
        yield
        return
    monitor = SystemMetricsMonitor(run_id, sampling_interval=SAMPLING_S, resume_logging=True,
                                   tracking_uri=uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
