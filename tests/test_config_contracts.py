"""Facts written once and read across package boundaries stay consistent."""
import dataclasses
import typing

import pytest

from assigners import ASSIGNERS
from model import ANCHOR_GRIDS, PostprocessParams
from pipeline.config import ASSIGNER_NAMES, ASSIGNER_TABLE, EvalConfig, ModelConfig, TrainConfig, assigner_spec
from pipeline.config import resolve_anchor_grid, resolve_mask_loss_weight


def test_eval_config_is_the_postprocess_parameters():
    # model.postprocess reads these attributes; EvalConfig is where their values are written
    assert isinstance(EvalConfig(), PostprocessParams)
    declared = typing.get_type_hints(PostprocessParams)
    ours = {f.name for f in dataclasses.fields(EvalConfig)}
    assert set(declared) <= ours


def test_assigner_table_describes_exactly_the_registered_assigners():
    assert list(ASSIGNER_TABLE) == list(ASSIGNERS)
    # the benchmark-only brute force trains but stays out of the grids and the sweeps' defaults
    assert ASSIGNER_NAMES == tuple(n for n in ASSIGNERS if n != "atss_maiou_brute")
    assert ASSIGNER_TABLE["atss_maiou_brute"].benchmark_only
    for name, spec in ASSIGNER_TABLE.items():
        assert spec.anchor_grid in ANCHOR_GRIDS, name
        assert spec.mask_loss_weight > 0 and spec.label


def test_auto_settings_resolve_through_the_table():
    assert resolve_anchor_grid(ModelConfig(), "fixed_iou") == "yolact"
    assert resolve_anchor_grid(ModelConfig(), "atss_maiou") == "atss"
    assert resolve_anchor_grid(ModelConfig(anchor_grid="mayolact"), "fixed_iou") == "mayolact"
    assert resolve_mask_loss_weight(TrainConfig(assigner="fixed_iou")) == 6.125
    assert resolve_mask_loss_weight(TrainConfig(assigner="atss_giou")) == 8.0
    assert resolve_mask_loss_weight(TrainConfig(assigner="atss_giou", loss_mask=3.0)) == 3.0


def test_unknown_assigner_names_the_valid_ones():
    with pytest.raises(ValueError, match="atss_maiou"):
        assigner_spec("atss_foo")
