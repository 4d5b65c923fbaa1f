"""The training and evaluation command lines: help texts, config assembly, and a real tiny run."""
import json
import re
from pathlib import Path

import pytest

from jobs import evaluate as evaluate_job
from jobs import train as train_job
from pipeline.presets import get_preset
from tests.pipeline.train_support import tiny_config


def _options(parser) -> list:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


@pytest.mark.parametrize("module", [train_job, evaluate_job])
def test_every_option_is_documented_with_its_default(module):
    parser = module.build_parser()
    for action in _options(parser):
        assert action.help, action.option_strings
        if not action.required:
            assert "default" in action.help, action.option_strings
    text = parser.format_help()
    assert all(a.option_strings[0] in text for a in _options(parser))


def test_train_help_shows_the_tiny_preset_values():
    text = " ".join(train_job.build_parser().format_help().split())
    tiny = get_preset("tiny")
    assert f"(default: {tiny.data.scale})" in text
    assert f"(default: {tiny.train.assigner})" in text
    assert f"(default: {tiny.train.max_iters})" in text


def test_train_flags_and_overrides_build_the_config():
    args = train_job.build_parser().parse_args(
        ["--data", "/d", "--scale", "320", "--assigner", "fixed_iou", "--num-workers", "2",
         "--seed", "3", "--set", "train.lr=0.002", "--set", "model.num_classes=20"])
    cfg = train_job.config_from_args(args)
    assert (cfg.data.data_dir, cfg.data.scale, cfg.train.assigner) == ("/d", 320, "fixed_iou")
    assert (cfg.train.num_workers, cfg.train.seed, cfg.train.lr) == (2, 3, 0.002)
    assert cfg.model.num_classes == 20
    assert cfg.train.batch_size == get_preset("tiny").train.batch_size  # untouched: preset value
    with pytest.raises(SystemExit):
        train_job.build_parser().parse_args(["--assigner", "nope"])
    assert train_job.main(["--set", "train.nope=1"]) == 2


@pytest.mark.slow
def test_train_then_evaluate_from_the_command_line(tmp_path, capsys):
    cfg = tiny_config(tmp_path)  # the same small data and model, given as --set overrides
    sets = [f"{k}={v}" for k, v in cfg.flat().items()
            if k.split(".")[0] in ("data", "model") and v is not None and not isinstance(v, tuple)]
    argv = ["--num-workers", "0", "--max-iters", "2", "--set", "train.batch_size=2",
            "--set", f"train.storage_path={tmp_path / 'ray'}",
            "--set", f"tracking.tracking_uri={cfg.tracking.tracking_uri}",
            "--name", "cli"] + [x for s in sets for x in ("--set", s)] + \
        ["--set", "train.log_every=1", "--set", "eval.fps_runs=2", "--set", "eval.fps_warmup=0"]
    assert train_job.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["name"] == "cli" and "segm/AP" in result["metrics"]
    ckpt = Path(result["checkpoint"])

    out = tmp_path / "eval"
    assert evaluate_job.main(["--checkpoint", str(ckpt), "--out", str(out), "--overlays", "3",
                              "--set", "eval.fps_runs=2"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["segm/AP"] == pytest.approx(result["metrics"]["segm/AP"])
    assert json.loads((out / "metrics.json").read_text())["num_anchors"] == metrics["num_anchors"]
    assert len(list((out / "overlays").glob("*.png"))) == 3
    assert (out / "coco_results.json").is_file()
    assert evaluate_job.main(["--checkpoint", str(tmp_path / "missing")]) == 2
    assert re.search(r"checkpoint .*missing does not exist", capsys.readouterr().err)
