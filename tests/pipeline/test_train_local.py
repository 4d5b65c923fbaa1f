"""In-process runs (`train.num_workers=0`: Ray Train's local mode, no cluster) and fine-tuning."""
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from pipeline.config import Config
from pipeline.config_files import load_config_file
from pipeline.eval.evaluate import evaluate_checkpoint
from pipeline.eval.model_files import MODEL_FILE, build_model, load_weights
from pipeline.tracking import resolve_tracking_uri
from pipeline.train.loop import _window_metrics
from pipeline.train.run import run_training
from tests.pipeline.train_support import tiny_config

ITERS = 4


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("local")


@pytest.fixture(scope="module")
def local_run(root):
    cfg = tiny_config(root, f"train.max_iters={ITERS}", "train.log_every=2",
                      "train.checkpoint_every=2", "data.source=parquet")  # the default route, end to end
    return cfg, run_training(cfg, run_name="local")


def test_in_process_run_keeps_checkpoints_and_logs_steps(local_run, tmp_path):
    cfg, result = local_run
    ckpt = Path(result["checkpoint"])
    assert ckpt.name == f"iter_{ITERS:07d}" and (ckpt / MODEL_FILE).is_file()
    assert (ckpt.parent / "iter_0000002" / MODEL_FILE).is_file()  # the intermediate one
    client = MlflowClient(resolve_tracking_uri(cfg.tracking))
    assert [m.step for m in client.get_metric_history(result["run_id"], "train/loss")] == [2, 4]
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and "segm/AP" in run.data.metrics
    logged = client.download_artifacts(result["run_id"], "config/config.yaml", str(tmp_path))
    assert load_config_file(logged, Config()) == cfg  # --config with it reproduces the run


TIMING = ("fps", "train_time", "wall_time", "time/")  # time/…: pipeline.train.phases


def test_logged_metrics_equal_jobs_evaluate_on_the_final_checkpoint(local_run, tmp_path):
    _, result = local_run
    again = evaluate_checkpoint(result["checkpoint"], out_dir=tmp_path)
    same = {k: v for k, v in again.items() if isinstance(v, float) and not k.startswith(TIMING)}
    assert len(same) >= 20
    assert same == {k: result["metrics"][k] for k in same}  # digit for digit
    # the JSON route, on the same checkpoint: the same numbers (the run read the Parquet tables)
    by_json = evaluate_checkpoint(result["checkpoint"], out_dir=tmp_path / "json", overrides=["data.source=coco"])
    assert {k: by_json[k] for k in same} == same


def test_evaluation_during_training_logs_curves_and_changes_nothing(local_run, root):
    cfg, plain = local_run
    evaluated = run_training(tiny_config(root, f"train.max_iters={ITERS}", "train.log_every=2",
                                         "train.checkpoint_every=2", "eval.eval_every=2"),
                             run_name="local-eval-every")
    client = MlflowClient(resolve_tracking_uri(cfg.tracking))
    for name in ("segm/AP", "bbox/AP", "segm/oLRP", "bbox/oLRP_FN"):
        assert [m.step for m in client.get_metric_history(evaluated["run_id"], name)] == [2, ITERS]
    assert not client.get_metric_history(evaluated["run_id"], "eval/periodic")
    final = {k: v for k, v in plain["metrics"].items() if isinstance(v, float) and not k.startswith(TIMING)}
    assert final == {k: evaluated["metrics"][k] for k in final}  # evaluating does not change training


def test_fine_tuning_from_our_checkpoint_with_another_class_count(local_run):
    cfg, result = local_run
    src = torch.load(Path(result["checkpoint"]) / MODEL_FILE, weights_only=True)
    three = tiny_config(Path("/nonexistent"), "model.num_classes=3")
    model = build_model(three, load_pretrained=False)
    report = load_weights(model, result["checkpoint"])
    assert report["skipped"] and all(("cls" in k or "semantic" in k) for k in report["skipped"])
    assert not report["missing"] and not report["unexpected"]
    state = model.state_dict()
    assert all(torch.equal(state[k], src[k]) for k in report["loaded"])
    assert all(state[k].shape != src[k].shape for k in report["skipped"])
    # through the config, as `train.init_from`
    via_cfg = build_model(tiny_config(Path("/nonexistent"), "model.num_classes=3",
                                      f"train.init_from={result['checkpoint']}"))
    assert torch.equal(via_cfg.state_dict()[report["loaded"][0]], src[report["loaded"][0]])


def test_window_metrics_count_skipped_steps_and_leave_them_out_of_means():
    window = [{"loss": 2.0, "lr": 0.1, "skipped": 0.0}, {"loss": float("nan"), "lr": 0.1, "skipped": 1.0},
              {"loss": 4.0, "lr": 0.1, "skipped": 0.0}]
    progress = {"iteration": 30, "epoch": 1, "skipped_steps": 3}
    m = _window_metrics(window, progress, world=1, device=torch.device("cpu"))
    assert m == {"iteration": 30, "epoch": 1, "train/loss": 3.0, "train/lr": 0.1,
                 "train/skipped_steps": 3, "train/bad_images": 0}
    all_bad = _window_metrics([{"loss": float("inf"), "skipped": 1.0}], progress, 1, torch.device("cpu"))
    assert all_bad["train/loss"] != all_bad["train/loss"]  # NaN: nothing finite to average


def test_parquet_integrals_are_precomputed_by_the_run(root):
    # `data.integrals=parquet` needs the per-instance tables: the run writes them before training.
    cfg = tiny_config(root / "pq", "train.max_iters=2", "train.checkpoint_every=2", "data.integrals=parquet",
                      f"data.parquet_dir={root / 'pq' / 'tables'}", "eval.fps_runs=1", "eval.overlays=0")
    result = run_training(cfg, run_name="parquet")
    assert sorted(p.name for p in (root / "pq" / "tables").iterdir() if p.is_dir()) == ["train", "val"]
    # evaluation (not augmented) reads the exact integrals of its S×S masks; augmented training maps
    scaled = [(root / "pq" / "tables" / split / f"scaled-{cfg.data.scale}").is_dir() for split in ("train", "val")]
    assert scaled == [False, True]
    assert Path(result["checkpoint"], MODEL_FILE).is_file()


def test_rank_0_prints_a_progress_line_per_logging_window(local_run, capsys):
    cfg, _ = local_run
    run_training(tiny_config(Path(cfg.train.storage_path).parent, f"train.max_iters={ITERS}",
                             "train.log_every=2", "train.checkpoint_every=2"), run_name="local-progress")
    out = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("iter ")]
    assert [ln.split(" · ")[0] for ln in out] == ["iter 2/4", "iter 4/4"]
    assert all("img/s" in ln and "ETA" in ln for ln in out)
