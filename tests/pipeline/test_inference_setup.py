"""Inference settings of evaluation: precision, channels_last, and what an fps figure states."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from pipeline.config import Config
from pipeline.data.datasets import build_dataset, collate, dataset_dir
from pipeline.eval.evaluate import checkpoint_speed, evaluate_model, inference_setup, predict
from pipeline.eval.model_files import CONFIG_FILE, MODEL_FILE, build_model
from pipeline.eval.runtime import BF16_AUTOCAST, FP32, bf16_native, channels_last, inference_precision
from tests.pipeline.train_support import tiny_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Config, torch.nn.Module]:
    cfg = tiny_config(tmp_path_factory.mktemp("infer"), "eval.fps_warmup=0", "eval.fps_runs=2",
                      "eval.score_thr=0.0", "eval.max_per_img=20", "eval.overlays=0")
    dataset_dir(cfg.data)
    torch.manual_seed(0)
    return cfg, build_model(cfg, load_pretrained=False).eval()


def test_precision_names_and_bad_values():
    assert inference_precision(CPU, amp=True, precision="fp32") == FP32  # amp is CUDA-only
    assert inference_precision(CPU, amp=False, precision="bf16") == (BF16_AUTOCAST if bf16_native(CPU) else FP32)
    with pytest.raises(ValueError, match="eval.precision"):
        inference_precision(CPU, amp=False, precision="fp16")


def test_channels_last_is_a_layout_change_for_the_block_only(tiny):
    _, model = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    conv = next(p for p in model.parameters() if p.dim() == 4)
    with channels_last(model, True):
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert conv.is_contiguous()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _predictions(model, cfg, images, sizes, **eval_changes):
    eval_cfg = replace(cfg.eval, **eval_changes)
    with inference_setup(model, eval_cfg, CPU, amp=False, threads=1) as (net, precision):
        return predict(net, images, sizes, eval_cfg, precision), precision


def test_channels_last_and_bf16_predict_what_fp32_predicts(tiny):
    cfg, model = tiny
    val = build_dataset(cfg.data, "val")
    batch = collate([val[i] for i in range(2)])
    sizes = [t["orig_size"] for t in batch.targets]
    ref, p = _predictions(model, cfg, batch.images, sizes, precision="fp32", channels_last=False)
    cl, _ = _predictions(model, cfg, batch.images, sizes, precision="fp32", channels_last=True)
    assert p == FP32
    for a, b in zip(ref, cl):  # the same network in another layout: float rounding only
        n = min(len(a["scores"]), len(b["scores"]), 20)
        torch.testing.assert_close(a["scores"][:n], b["scores"][:n], rtol=1e-4, atol=1e-5)
    if not bf16_native(CPU):
        pytest.skip("this CPU has no native bf16: eval.precision=bf16 runs in fp32")
    bf, p = _predictions(model, cfg, batch.images, sizes, precision="bf16", channels_last=True)
    assert p == BF16_AUTOCAST
    with inference_setup(model, replace(cfg.eval, precision="bf16"), CPU, amp=False, threads=1) as (net, _):
        # the bf16 route runs a folded copy (model.fold); the model itself keeps its norms
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for a, b in zip(ref, bf):  # bf16 keeps ~3 significant digits: the top scores agree loosely
        torch.testing.assert_close(a["scores"][:5], b["scores"][:5], rtol=0.05, atol=0.02)
        assert a["masks"].shape[1:] == b["masks"].shape[1:]


def test_fps_states_its_setup_and_the_checkpoint_route_times_the_same(tiny, tmp_path):
    cfg, model = tiny
    val = build_dataset(cfg.data, "val")
    metrics = evaluate_model(model, val, cfg.eval, CPU, batch_size=2, threads=1)
    assert metrics["fps"] > 0
    precision = inference_precision(CPU, False, cfg.eval.precision)
    layout = ", channels-last" if cfg.eval.channels_last else ""
    assert metrics["fps_setup"] == f"cpu (1 threads), {precision}{layout}, batch 1, model + post-processing"
    none = evaluate_model(model, val, replace(cfg.eval, fps_runs=0), CPU, batch_size=2, threads=1)
    assert "fps" not in none and "fps_setup" not in none
    assert {k: v for k, v in none.items()} == {k: v for k, v in metrics.items() if not k.startswith("fps")}
    torch.save(model.state_dict(), tmp_path / MODEL_FILE)
    (tmp_path / CONFIG_FILE).write_text(json.dumps(cfg.to_dict()))
    timed = checkpoint_speed(tmp_path, replace(cfg.eval, precision="bf16", channels_last=False))
    assert timed["fps"] > 0 and timed["setup"].startswith(f"cpu ({cfg.train.cpus_per_worker} threads), "
                                                           f"{BF16_AUTOCAST if bf16_native(CPU) else FP32}, batch 1")


@pytest.mark.parametrize("options", [dict(dcn_interval=1, dcn_groups=4, dcn_bias=False), dict(carafe=True),
                                     dict(sipmask=True), dict(mask_rescoring=True, scales_per_level=3)])
def test_every_model_option_runs_in_channels_last(options):
    """DCN, CARAFE, SipMask and re-scoring reshape their tensors: channels_last must not break them."""
    from model import Yolact
    torch.manual_seed(0)
    net = Yolact(3, "resnet18", "atss", fpn_channels=16, num_protos=4, **options).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        with channels_last(net, True):
            out = net(x.contiguous(memory_format=torch.channels_last))
    for key in ("cls", "box", "coef", "proto"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-4)
