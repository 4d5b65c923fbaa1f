"""`pipeline` hands its EvalConfig to `model.postprocess` as is (model cannot import pipeline):
every post-processing parameter must exist there with the official default."""
import dataclasses

from model import PostprocessParams
from pipeline.config import EvalConfig


def test_eval_config_carries_every_postprocess_parameter_with_its_default():
    ours = {f.name: f.default for f in dataclasses.fields(EvalConfig)}
    for f in dataclasses.fields(PostprocessParams):
        assert f.name in ours, f"EvalConfig lacks {f.name}"
        assert ours[f.name] == f.default, f"EvalConfig.{f.name}={ours[f.name]} vs model default {f.default}"
