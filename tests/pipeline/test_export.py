"""ONNX export: ONNX Runtime (real, CPU) against PyTorch eager on the same input, and jobs.predict --onnx."""
import json

import pytest
import torch

from jobs import export as export_job
from jobs import predict as predict_job
from pycocotools import mask as mask_utils

from pipeline.eval.export import (MASK_PIXEL_TOLERANCE, RAW_OUTPUTS, RAW_TOLERANCE, check_export, example_images,
                                  load_onnx, read_info)
from pipeline.eval.predictor import complete_output, load_predictor, network_input
from tests.pipeline.predict_support import SCALE, save_tiny_checkpoint, write_images

SLOW = pytest.mark.slow  # they share one dynamo export: ~15 s, ~35 s on the loaded 2-core machine


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    ckpt = save_tiny_checkpoint(root / "ckpt")
    onnx_path = root / "model.onnx"
    assert export_job.main(["--checkpoint", str(ckpt), "--out", str(onnx_path)]) == 0
    return ckpt, onnx_path


@SLOW
def test_raw_outputs_within_tolerance_and_same_detections(exported, tmp_path):
    ckpt, onnx_path = exported
    torch_pred, onnx_pred = load_predictor(str(ckpt), precision="fp32"), load_onnx(onnx_path)
    assert read_info(onnx_path) == torch_pred.info  # scale, classes, names, grid, post-processing
    images = torch.stack([network_input(im, SCALE) for im in _arrays(tmp_path)])  # [3, 3, S, S], batch ≠ export's 2
    sizes = [(80, 120), (100, 90), (64, 64)]
    report = check_export(torch_pred, onnx_pred, images, sizes)
    assert report["ok"] and report["same_detections"], report
    assert max(report["max_abs_diff"].values()) <= RAW_TOLERANCE and min(report["detections"]) > 0
    assert set(report["max_abs_diff"]) == set(RAW_OUTPUTS)


def _arrays(tmp_path):
    from pipeline.eval.inputs import read_image
    return [read_image(p) for p in write_images(tmp_path / "in")]


@SLOW
def test_check_notices_a_different_network(exported, tmp_path):
    ckpt, onnx_path = exported
    other = load_predictor(str(save_tiny_checkpoint(tmp_path / "other", seed=1)), precision="fp32")
    report = check_export(other, load_onnx(onnx_path), example_images(1, SCALE), [(SCALE, SCALE)])
    assert not report["ok"] and max(report["max_abs_diff"].values()) > RAW_TOLERANCE


# yolact's 3-anchor grid and atss's, at the trained scale and at another one (`--scale`)
@pytest.mark.parametrize("assigner, scale", [("fixed_iou", SCALE), ("atss_maiou", SCALE), ("atss_maiou", 128)])
def test_anchors_from_the_metadata_equal_the_model_s(tmp_path, assigner, scale):
    pred = load_predictor(str(save_tiny_checkpoint(tmp_path, f"train.assigner={assigner}")), scale=scale)
    assert pred.info.scale == scale
    out = pred.run(example_images(1, scale))
    rebuilt = complete_output({k: out[k] for k in RAW_OUTPUTS}, pred.info)
    assert torch.equal(rebuilt["anchors"], out["anchors"])
    assert rebuilt["num_anchors_per_level"] == out["num_anchors_per_level"]


@SLOW
def test_predict_with_onnx_equals_predict_with_the_checkpoint(exported, tmp_path, capsys):
    ckpt, onnx_path = exported
    folder = tmp_path / "in"
    write_images(folder)
    for flags, out in ((["--checkpoint", str(ckpt), "--precision", "fp32"], "a"), (["--onnx", str(onnx_path)], "b")):
        assert predict_job.main([*flags, "--input", str(folder), "--out", str(tmp_path / out)]) == 0
    capsys.readouterr()
    a = json.loads((tmp_path / "a" / "coco_results.json").read_text())
    b = json.loads((tmp_path / "b" / "coco_results.json").read_text())
    assert len(a) == len(b) > 0
    for ra, rb in zip(a, b):
        same = ("image_id", "category_id")
        assert [ra[k] for k in same] == [rb[k] for k in same]
        # as check_export: a pixel within float rounding of the 0.5 threshold may flip
        ma, mb = mask_utils.decode(ra["segmentation"]), mask_utils.decode(rb["segmentation"])
        assert (ma != mb).mean() <= MASK_PIXEL_TOLERANCE
        assert ra["score"] == pytest.approx(rb["score"], abs=RAW_TOLERANCE)
        assert ra["bbox"] == pytest.approx(rb["bbox"], abs=1e-3)


@SLOW
def test_export_and_onnx_mistakes(exported, tmp_path, capsys):
    ckpt, _ = exported
    text = tmp_path / "notes.onnx"
    text.write_text("hello")
    write_images(tmp_path / "in", sizes=[(40, 40)])
    assert predict_job.main(["--onnx", str(text), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "o")]) == 2
    assert "is not a readable ONNX model" in capsys.readouterr().err
    rescoring = save_tiny_checkpoint(tmp_path / "pp", "model.mask_rescoring=true")
    assert export_job.main(["--checkpoint", str(rescoring), "--out", str(tmp_path / "pp.onnx")]) == 2
    assert "mask re-scoring" in capsys.readouterr().err
