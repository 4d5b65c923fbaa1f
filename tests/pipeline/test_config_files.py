"""Configuration as YAML files: the round trip, the layering, and errors that name file, line and key."""
from dataclasses import replace

import pytest

from pipeline.config import Config, apply_overrides
from pipeline.config_files import config_yaml, load_config_file, resolve_config
from pipeline.presets import PRESETS, get_preset


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_survives_the_yaml_round_trip_from_another_base(preset, tmp_path):
    cfg = apply_overrides(get_preset(preset), ["data.data_dir=/data/x", "train.loss_mask=7",
                                               "tracking.experiment=0123", "model.dcn_stages=4,5"])
    path = tmp_path / "c.yaml"
    path.write_text(config_yaml(cfg))
    other = get_preset("paper" if preset != "paper" else "tiny")
    assert load_config_file(path, other) == cfg
    assert config_yaml(load_config_file(path, other)) == path.read_text()


def test_a_partial_file_is_layered_between_the_preset_and_the_sets(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# mine\ntrain:\n  lr: 0.01   # an int would do for a float too\n  seed: 3\n"
                    "sweep:\n  seeds: [0, 1]\ndata:\n  data_dir: null\n")
    cfg = resolve_config(get_preset("tiny"), path, ["train.seed=5"])
    tiny = get_preset("tiny")
    assert cfg == replace(tiny, train=replace(tiny.train, lr=0.01, seed=5),
                          sweep=replace(tiny.sweep, seeds=(0, 1)))
    path.write_text("")  # an empty file changes nothing
    assert resolve_config(tiny, path, []) == tiny


@pytest.mark.parametrize("text, message", [
    ("train:\n  lr: 0.01\n  lrr: 2\n", "c.yaml:3: train.lrr: unknown key; valid: assigner, "),
    ("trian:\n  lr: 1\n", "c.yaml:1: trian: unknown section; valid: data, model, train, eval, tracking, sweep"),
    ("train:\n\n  seed: '3'\n", "c.yaml:3: train.seed: expected an integer, got '3'"),
    ("train:\n  seed: 3.5\n", "c.yaml:2: train.seed: expected an integer, got 3.5"),
    ("data:\n  augment: 1\n", "c.yaml:2: data.augment: expected true or false, got 1"),
    ("train:\n  lr: yes\n", "c.yaml:2: train.lr: expected a number, got True"),
    ("train:\n  max_iters: 5\nmodel:\n  dcn_stages: 3\n",
     "c.yaml:4: model.dcn_stages: expected a list, each item an integer, got 3"),
    ("sweep:\n  seeds: [0, x]\n", "c.yaml:2: sweep.seeds: expected an integer, got [0, 'x']"),
    ("train:\n  seed: 1\n  seed: 2\n", "c.yaml:3: train.seed: given twice"),
    ("train: 3\n", "c.yaml:1: section 'train' must be a mapping"),
    ("train:\n  lr: [1,\n", "c.yaml:3: not valid YAML"),
])
def test_mistakes_in_a_file_name_the_file_the_line_and_the_key(text, message, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        load_config_file(path, Config())
    assert str(e.value).startswith(f"{tmp_path}/{message}"), str(e.value)
    assert "\n" not in str(e.value)


def test_a_missing_or_binary_file_says_so(tmp_path):
    with pytest.raises(ValueError, match="--config .*nope.yaml: no such file"):
        resolve_config(Config(), tmp_path / "nope.yaml", [])
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04\xff\xfe")
    with pytest.raises(ValueError, match="--config .*model.pt: not a text file"):
        resolve_config(Config(), tmp_path / "model.pt", [])
