"""What a trained run leaves in MLflow for its users: the model as a pyfunc that predicts on an image
array, the data as run inputs, system metrics, per-class AP, a readable name and a description;
and what the UI shows of it, read through a real `mlflow server` on 127.0.0.1.

One in-process training run (4 iterations, `train.num_workers=0`) on a real sqlite store.
"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from pycocotools import mask as mask_utils

from pipeline.config import apply_overrides
from pipeline.data.coco import load_image
from pipeline.data.datasets import dataset_dir, load_split, split_paths
from pipeline.eval.evaluate import PER_CLASS_FILE, RESULTS_FILE
from pipeline.eval.mlflow_model import MODEL_NAME, OUTPUT_COLUMNS
from pipeline.tracking import open_run, resolve_tracking_uri
from pipeline.tracking_view import (COMPARE_VIEW, EXPERIMENT_KIND_TAG, NOTE_TAG, SHARED_VIEW_TAG,
                                    TRAINING_KIND, log_data_inputs, run_display_name, runs_url,
                                    system_metrics)
from pipeline.train.run import run_training
from tests.pipeline.train_support import tiny_config

SAMPLING_ENV = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"
SERVER_START_S = 240  # a loaded 2-core machine: `mlflow server` imports a lot before it listens


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_model")
    cfg = tiny_config(root, "train.max_iters=4", "train.checkpoint_every=4", "eval.fps_runs=1")
    old = os.environ.get(SAMPLING_ENV)
    os.environ[SAMPLING_ENV] = "1"  # a sample per second: the 4 iterations take several
    try:
        result = run_training(cfg, run_name="pyfunc")
    finally:
        os.environ.pop(SAMPLING_ENV) if old is None else os.environ.__setitem__(SAMPLING_ENV, old)
    client = MlflowClient(resolve_tracking_uri(cfg.tracking))
    return cfg, result, client, client.get_run(result["run_id"])


def test_the_logged_model_loads_back_and_predicts_like_the_evaluation(trained, tmp_path, monkeypatch):
    cfg, result, client, run = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", resolve_tracking_uri(cfg.tracking))  # for models:/ URIs
    [output] = run.outputs.model_outputs
    model = mlflow.pyfunc.load_model(f"models:/{output.model_id}")
    assert model.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, -1, -1, 3)
    assert mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/{MODEL_NAME}").metadata.model_id == output.model_id
    val = load_split(cfg.data, "val")
    first = val.records[0]
    image = load_image(first.path, first.image_id)  # [H, W, 3] uint8
    got = model.predict(image[None])
    assert list(got.columns) == [c for c, _ in OUTPUT_COLUMNS] and len(got) > 0
    # The same detections as the run's own evaluation wrote for this image (another batch, so
    # scores agree to float rounding, not bit for bit).
    results = client.download_artifacts(run.info.run_id, f"evaluation/{RESULTS_FILE}", str(tmp_path))
    want = sorted((r for r in json.loads(Path(results).read_text()) if r["image_id"] == first.image_id),
                  key=lambda r: -r["score"])
    top = got.sort_values("score", ascending=False).head(5)
    assert list(top.category_id) == [r["category_id"] for r in want[:5]]
    assert list(top.score) == pytest.approx([r["score"] for r in want[:5]], abs=1e-4)
    assert np.allclose(top[["x", "y", "w", "h"]].to_numpy(), [r["bbox"] for r in want[:5]], atol=0.05)
    assert set(top.category) <= set(val.category_names) and set(got.image) == {0}
    mask = mask_utils.decode({"size": list(image.shape[:2]), "counts": got["mask"].iloc[0]})
    assert mask.shape == image.shape[:2]
    with pytest.raises(mlflow.exceptions.MlflowException, match="dtype"):  # the signature guards it
        model.predict(image[None].astype(np.float32))
    two = model.predict(np.stack([image, image[::-1].copy()]))  # a batch: rows say which image
    assert set(two.image) == {0, 1} and two[two.image == 0].score.tolist() == pytest.approx(got.score.tolist(), abs=1e-4)


def test_run_is_named_and_described_for_people(trained):
    cfg, _, client, run = trained
    assert run.info.run_name == "s128 · maIoU · seed 0" == run_display_name(128, "atss_maiou", 0)
    assert run_display_name(550, "fixed_iou", 2, "carafe") == "s550 · fixed IoU · carafe · seed 2"
    note = run.data.tags[NOTE_TAG]
    assert note.startswith("**ATSS w. maIoU** at 128 px, seed 0") and "4 iterations" in note
    assert f"mask AP {run.data.metrics['segm/AP']:.1f}" in note
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND and exp.tags[NOTE_TAG]


def test_train_and_val_annotations_are_the_run_inputs(trained):
    cfg, _, _, run = trained
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation"}
    for context, split in (("training", "train"), ("validation", "val")):
        path = split_paths(cfg.data, split)[0]
        assert inputs[context].name == f"{Path(dataset_dir(cfg.data)).name}/{split}"
        assert inputs[context].digest == hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        assert json.loads(inputs[context].source)["uri"].endswith(path)


def test_other_data_gets_another_digest(trained, tmp_path):
    cfg, _, client, _ = trained
    ann = json.loads(Path(split_paths(cfg.data, "val")[0]).read_text())
    ann["annotations"] = ann["annotations"][:-1]  # one label less
    (tmp_path / "val.json").write_text(json.dumps(ann))
    run = open_run(cfg.tracking, run_name="other data")
    log_data_inputs(run.client, run.run_id, {"validation": ("synth/val", str(tmp_path / "val.json"))})
    trained_digest = {i.dataset.digest for i in trained[3].inputs.dataset_inputs}
    [other] = client.get_run(run.run_id).inputs.dataset_inputs
    assert other.dataset.digest not in trained_digest


def test_system_metrics_are_recorded_during_training_and_can_be_switched_off(trained, monkeypatch):
    cfg, _, _, run = trained
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
    monkeypatch.setenv(SAMPLING_ENV, "0.2")
    off = open_run(cfg.tracking, run_name="off")
    with system_metrics(off.uri, off.run_id, enabled=False):
        time.sleep(0.6)
    off.finish()
    assert not [k for k in off.metrics() if k.startswith("system/")]


def test_per_class_ap_is_logged_and_in_the_evaluation_artifacts(trained, tmp_path):
    cfg, _, client, run = trained
    names = load_split(cfg.data, "val").category_names
    for t in ("segm", "bbox"):
        assert {f"{t}_AP/{n}" for n in names} <= set(run.data.metrics)
    table = client.download_artifacts(run.info.run_id, f"evaluation/{PER_CLASS_FILE}", str(tmp_path))
    lines = Path(table).read_text().splitlines()
    assert lines[0] == "class,segm_AP,bbox_AP" and [ln.split(",")[0] for ln in lines[1:]] == names
    first = lines[1].split(",")
    assert float(first[1]) == pytest.approx(run.data.metrics[f"segm_AP/{names[0]}"], abs=0.005)


def test_sweep_parent_carries_the_grid_and_config_not_one_cells_values(trained, tmp_path):
    from pipeline.sweep.driver import _parent_run, open_record

    cfg, _, client, _ = trained
    sweep_cfg = apply_overrides(cfg, [f"sweep.root={tmp_path}", "sweep.scales=96,128",
                                      "sweep.assigners=atss_iou,atss_maiou", "sweep.seeds=0,1"])
    parent = _parent_run(open_record(sweep_cfg, "tiny", name="ui-sweep"))
    run = client.get_run(parent.run_id)
    params = run.data.params
    assert run.info.run_name == "ui-sweep"
    assert (params["sweep.preset"], params["sweep.cells"]) == ("tiny", "8")
    assert (params["sweep.scales"], params["sweep.assigners"]) == ("(96, 128)", "('atss_iou', 'atss_maiou')")
    assert not {"data.scale", "train.assigner", "train.seed", "train.storage_path"} & set(params)
    assert params["train.max_iters"] == "4"  # what every cell shares stays
    assert "8 training runs" in run.data.tags[NOTE_TAG] and "**tiny**" in run.data.tags[NOTE_TAG]
    saved = client.download_artifacts(parent.run_id, "config/config.json", str(tmp_path / "dl"))
    assert json.loads(Path(saved).read_text())["sweep"]["scales"] == [96, 128]
    parent.finish()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(trained):
    """`mlflow server` on 127.0.0.1 over the trained run's store: what the UI reads."""
    cfg = trained[0]
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1",
                             "--backend-store-uri", resolve_tracking_uri(cfg.tracking)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + SERVER_START_S
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"mlflow server did not come up on {url}")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _api(url: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", method="POST" if body is not None else "GET",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow  # `mlflow server` takes 10-60 s to come up on a loaded 2-core machine
def test_what_the_ui_shows_through_the_rest_api(trained, mlflow_server):
    cfg, _, _, trained_run = trained
    exp = _api(mlflow_server, f"experiments/get-by-name?experiment_name={cfg.tracking.experiment}")["experiment"]
    tags = {t["key"]: t["value"] for t in exp["tags"]}
    assert tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    # The link in the description opens the runs (not the GenAI overview) in the saved view.
    link = f"#/experiments/{exp['experiment_id']}/runs?workflowType=machine_learning&viewStateShareKey={COMPARE_VIEW}"
    assert f"]({link})" in tags[NOTE_TAG] and runs_url(mlflow_server, exp["experiment_id"]) == f"{mlflow_server}/{link}"
    view = json.loads(tags[SHARED_VIEW_TAG + COMPARE_VIEW])
    assert view["selectedColumns"][:4] == ["params.`train.assigner`", "params.`data.scale`", "params.`train.seed`",
                                           "metrics.`segm/AP`"]
    assert (view["orderByKey"], view["orderByAsc"]) == ("metrics.`segm/AP`", False)
    runs = _api(mlflow_server, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    [run] = [r for r in runs if r["info"]["run_id"] == trained_run.info.run_id]
    assert run["info"]["run_name"] == "s128 · maIoU · seed 0"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert (params["data.scale"], params["train.assigner"], params["train.seed"]) == ("128", "atss_maiou", "0")
    metrics = {m["key"] for m in run["data"]["metrics"]}
    assert {"segm/AP", "bbox/AP", "segm_AP/ring", "system/cpu_utilization_percentage"} <= metrics
    inputs = run["inputs"]["dataset_inputs"]
    assert sorted(i["tags"][0]["value"] for i in inputs) == ["training", "validation"]
    assert all(len(i["dataset"]["digest"]) == 16 for i in inputs)
    models = _api(mlflow_server, "logged-models/search", {"experiment_ids": [exp["experiment_id"]]})["models"]
    assert [m["info"]["source_run_id"] for m in models] == [trained_run.info.run_id]
    assert [m["info"]["status"] for m in models] == ["LOGGED_MODEL_READY"]
    with urllib.request.urlopen(mlflow_server, timeout=30) as r:  # the UI itself is served
        assert b"<html" in r.read().lower()


def test_a_name_given_on_the_command_line_names_the_mlflow_run(trained):
    from pipeline.train.run import _open_run

    cfg, _, client, _ = trained
    logger, note = _open_run(cfg, "ray-run-name", "/tmp/storage", "hash", {"variant": "carafe"}, None, None,
                             "my first try")
    run = client.get_run(logger.run_id)
    assert run.info.run_name == "my first try" and run.data.tags["maskaware.ray_run"] == "ray-run-name"
    assert run.data.tags[NOTE_TAG] == note and note.startswith("**ATSS w. maIoU** + carafe at 128 px")
    default, _ = _open_run(cfg, "other", "/tmp/storage", "hash", {"variant": "carafe"}, None, None, None)
    assert client.get_run(default.run_id).info.run_name == "s128 · maIoU · carafe · seed 0"
    logger.finish()
    default.finish()
