"""MLflow tracking against a real local sqlite store."""
import pickle
from pathlib import Path

import pytest

from pipeline.config import Config, TrackingConfig
from pipeline.tracking import (CELL_KEY_TAG, PARENT_TAG, ReportToMlflow, child_runs, find_run,
                               get_or_create_experiment, open_run, resolve_tracking_uri,
                               run_tags, sqlite_uri)


@pytest.fixture
def tracking(tmp_path) -> TrackingConfig:
    return TrackingConfig(tracking_uri=sqlite_uri(tmp_path / "mlflow.db"), experiment="t")


def test_uri_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = resolve_tracking_uri(TrackingConfig())
    assert default == f"sqlite:///{tmp_path}/.cache/maskaware/mlflow.db"
    assert default.startswith("sqlite:////")  # absolute: four slashes
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/env.db")
    assert resolve_tracking_uri(TrackingConfig()) == "sqlite:////elsewhere/env.db"
    assert resolve_tracking_uri(TrackingConfig(tracking_uri="http://127.0.0.1:5000")) == \
        "http://127.0.0.1:5000"


def test_run_params_metrics_artifacts_and_nesting(tracking, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config(tracking=tracking)
    parent = open_run(tracking, run_name="sweep")
    run = open_run(tracking, run_name="cell", tags={**run_tags(cfg), CELL_KEY_TAG: "k1"},
                   parent_run_id=parent.run_id)
    run.log_params(cfg.flat())  # > 100 params: several batches
    run.log_metrics({"segm/AP": 12.5, "fps": 3, "note": "text", "none": None}, step=0)
    (tmp_path / "a.txt").write_text("hello")
    run.log_artifact(tmp_path / "a.txt", "files")
    run.log_dict(cfg.to_dict(), "config.json")
    run.finish()

    got = run.client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params["train.assigner"] == cfg.train.assigner
    assert len(got.data.params) == len(cfg.flat())
    assert got.data.metrics == {"segm/AP": 12.5, "fps": 3.0}
    assert got.data.tags["assigner"] == cfg.train.assigner and got.data.tags["seed"] == "0"
    assert got.data.tags[PARENT_TAG] == parent.run_id
    assert got.data.tags["git_commit"]
    names = {a.path for a in run.client.list_artifacts(run.run_id)}
    assert names == {"files", "config.json"}
    # artifacts live next to the DB, never under the CWD's ./mlruns
    art = Path(got.info.artifact_uri.removeprefix("file://"))
    assert art.is_relative_to(tmp_path / "mlartifacts")
    assert not (tmp_path / "mlruns").exists()
    assert [r.info.run_id for r in child_runs(tracking, parent.run_id)] == [run.run_id]


def test_find_run_is_the_idempotency_lookup(tracking):
    assert find_run(tracking, {CELL_KEY_TAG: "k"}) is None  # no experiment yet
    a = open_run(tracking, run_name="a", tags={CELL_KEY_TAG: "k"})
    assert find_run(tracking, {CELL_KEY_TAG: "k"}) is None  # still RUNNING
    assert find_run(tracking, {CELL_KEY_TAG: "k"}, statuses=("RUNNING",)).info.run_id == a.run_id
    a.finish()
    assert find_run(tracking, {CELL_KEY_TAG: "k"}).info.run_id == a.run_id
    assert find_run(tracking, {CELL_KEY_TAG: "other"}) is None
    # reopening continues the same run rather than creating a duplicate
    again = open_run(tracking, run_name="a", resume_run_id=a.run_id)
    assert again.run_id == a.run_id
    assert again.client.get_run(a.run_id).info.status == "RUNNING"
    with pytest.raises(ValueError, match="quote"):
        find_run(tracking, {CELL_KEY_TAG: "it's"})


def test_experiment_created_once(tracking):
    uri, first = get_or_create_experiment(tracking)
    assert get_or_create_experiment(tracking) == (uri, first)


def test_report_callback_logs_rank0_train_metrics_per_step(tracking):
    run = open_run(tracking, run_name="r")
    cb = ReportToMlflow(run.uri, run.run_id)
    cb = pickle.loads(pickle.dumps(cb))  # it travels to the Train controller actor
    for it in (10, 20):
        cb.after_report(None, [{"iteration": it, "train/loss": 1.0 / it, "train/lr": 0.1,
                                "other": 5}, {"iteration": it, "train/loss": 99.0}], None)
    cb.after_report(None, [{}], None)
    hist = run.client.get_metric_history(run.run_id, "train/loss")
    assert [(m.step, m.value) for m in hist] == [(10, 0.1), (20, 0.05)]
    assert "other" not in run.metrics()
