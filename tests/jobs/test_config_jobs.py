"""The real job commands, in subprocesses: --print-config / --config round trips, and mistakes that
get a one-line answer in seconds, before Ray starts or any MLflow run exists."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.config import Config
from pipeline.config_files import config_yaml
from pipeline.eval.model_files import CONFIG_FILE, MODEL_FILE

ROOT = Path(__file__).resolve().parents[2]
FAST_S = 60  # no Ray start, no retries: the slow path took 41 s unloaded; imports alone take ~20 s at load 20


def _job(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("job", ["jobs.train", "jobs.sweep"])
def test_print_config_then_config_reproduces_the_same_configuration(job, tmp_path):
    first = _job([job, "--preset", "cpu-ablation", "--set", "train.lr=0.01", "--print-config"], tmp_path)
    assert first.returncode == 0, first.stderr
    (tmp_path / "c.yaml").write_text(first.stdout)
    again = _job([job, "--config", str(tmp_path / "c.yaml"), "--print-config"], tmp_path)  # preset tiny
    assert again.returncode == 0 and again.stdout == first.stdout


def test_evaluate_layers_the_checkpoints_config_the_file_and_the_sets(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save({"w": torch.zeros(1)}, ckpt / MODEL_FILE)
    (ckpt / CONFIG_FILE).write_text(__import__("json").dumps(Config().to_dict()))
    (tmp_path / "c.yaml").write_text("eval:\n  score_thr: 0.2\n  nms_iou: 0.6\n")
    out = _job(["jobs.evaluate", "--checkpoint", str(ckpt), "--config", str(tmp_path / "c.yaml"),
                "--set", "eval.nms_iou=0.7", "--print-config"], tmp_path)
    assert out.returncode == 0, out.stderr
    eval_lines = out.stdout.split("eval:\n")[1]
    assert "  score_thr: 0.2\n" in eval_lines and "  nms_iou: 0.7\n" in eval_lines
    assert out.stdout == config_yaml(Config.from_dict({"eval": {"score_thr": 0.2, "nms_iou": 0.7}}))


@pytest.mark.parametrize("args, message", [
    (["jobs.train", "--set", "data.data_dir=/does/not/exist"], "data.data_dir='/does/not/exist' is not a directory"),
    (["jobs.sweep", "--set", "data.data_dir=/does/not/exist"], "data.data_dir='/does/not/exist' is not a directory"),
    (["jobs.precompute", "--data", "/does/not/exist"], "/does/not/exist"),
    (["jobs.evaluate", "--checkpoint", "/does/not/exist"], "checkpoint /does/not/exist does not exist"),
    (["jobs.report", "--sweep", "nope", "--root", "/does/not/exist"], "no sweep named 'nope'"),
    (["jobs.train", "--config", "{bad}"], "bad.yaml:2: train.seed: expected an integer, got 'x'"),
])
def test_a_mistake_gets_one_line_fast_and_leaves_no_run(args, message, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  seed: x\n")
    start = time.perf_counter()
    out = _job([a.replace("{bad}", str(bad)) for a in args], tmp_path)
    assert out.returncode == 2 and time.perf_counter() - start < FAST_S
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "m.db").exists()  # no MLflow run (not even the store) was created
