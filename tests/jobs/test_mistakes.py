"""Mistakes a new user makes get a one-line answer that says what is wrong, before any work starts."""
import json
import time

import torch

from jobs import evaluate as evaluate_job
from jobs import report as report_job
from jobs import train as train_job
from pipeline.config import Config
from pipeline.eval.model_files import CONFIG_FILE, MODEL_FILE


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


def test_train_with_a_missing_dataset_fails_fast_and_leaves_nothing_behind(tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    start = time.perf_counter()
    code = train_job.main(["--set", f"data.data_dir={tmp_path / 'nope'}", "--set",
                           f"tracking.tracking_uri=sqlite:///{db}", "--set", f"train.storage_path={tmp_path}"])
    assert code == 2 and time.perf_counter() - start < 30  # no Ray start, no retries
    err = _err(capsys)
    assert "is not a directory" in err and len(err.splitlines()) == 1
    assert not db.exists()  # no MLflow run was created
    (tmp_path / "d" / "annotations").mkdir(parents=True)
    assert train_job.main(["--data", str(tmp_path / "d")]) == 2
    assert "train annotations" in _err(capsys)


def test_evaluate_says_what_is_wrong_with_the_checkpoint(tmp_path, capsys):
    assert evaluate_job.main(["--checkpoint", str(tmp_path / "missing")]) == 2
    assert "does not exist" in _err(capsys)
    (tmp_path / "empty").mkdir()
    assert evaluate_job.main(["--checkpoint", str(tmp_path / "empty")]) == 2
    assert f"is not a checkpoint: it holds no {MODEL_FILE}" in _err(capsys)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert evaluate_job.main(["--checkpoint", str(text)]) == 2
    assert f"{text} is not a PyTorch weights file: it starts with b'hell'" in _err(capsys)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save({"w": torch.zeros(3)}, ckpt / MODEL_FILE)
    raw = (ckpt / MODEL_FILE).read_bytes()
    (ckpt / MODEL_FILE).write_bytes(raw[: len(raw) // 2])  # truncated
    assert evaluate_job.main(["--checkpoint", str(ckpt)]) == 2
    err = _err(capsys)
    assert "is a corrupt or truncated PyTorch weights file: " in err and len(err.splitlines()) == 1
    (ckpt / MODEL_FILE).write_bytes(raw)
    assert evaluate_job.main(["--checkpoint", str(ckpt)]) == 2
    assert "config not found (looked for" in _err(capsys)


def test_evaluate_finds_the_config_of_an_mlflow_artifact(tmp_path, capsys):
    run = tmp_path / "artifacts"
    (run / "checkpoint").mkdir(parents=True)
    (run / "config").mkdir()
    torch.save({"w": torch.zeros(3)}, run / "checkpoint" / MODEL_FILE)
    cfg = Config().to_dict()
    cfg["data"]["data_dir"] = str(tmp_path / "gone")
    (run / "config" / CONFIG_FILE).write_text(json.dumps(cfg))
    assert evaluate_job.main(["--checkpoint", str(run / "checkpoint" / MODEL_FILE)]) == 2
    assert "is not a directory" in _err(capsys)  # the config was found: now it is the data


def test_an_unknown_sweep_lists_the_ones_that_exist(tmp_path, capsys):
    (tmp_path / "tiny-1").mkdir()
    (tmp_path / "tiny-1" / "sweep.json").write_text("{}")
    assert report_job.main(["--sweep", "nope", "--root", str(tmp_path)]) == 2
    assert "no sweep named 'nope'" in (err := _err(capsys)) and "tiny-1" in err
