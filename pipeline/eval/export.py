"""ONNX export of the network up to its raw outputs, its check with ONNX Runtime, and loading it back.

What is exported: `Yolact.forward` minus what is not a tensor function of the image — the graph
maps `images` float32 [B, 3, S, S] (normalised, dynamic B) to `cls` [B, A, C+1], `box` [B, A, 4],
`coef` [B, A, k] (or [B, A, 4, k] with SipMask) and `proto` [B, k, Hp, Wp]. What stays in torch,
shared by both routes: the anchors (`make_anchors` from the grid in the metadata; constant for a
given S), the evaluation resize (`predictor.network_input`) and all of `model.postprocess`
(top-k per level, box decoding, Fast NMS, mask assembly and the resize to the original image:
data-dependent shapes that ONNX would express badly and that are cheap next to the network).
A YOLACT++ model with mask re-scoring is refused: its re-scoring net runs on the assembled masks,
inside the post-processing.

The model's `ModelInfo` (scale, class count, category ids and names, anchor grid, post-processing
parameters) travels in the file's `metadata_props` under `maskaware`, as JSON, so that
`jobs.predict --onnx` needs no checkpoint.

Exporter: `torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript), with a dynamic batch.
The legacy TorchScript exporter also works and was ~3× faster to export the test model here,
but torch deprecates it since 2.9 (it warns on every call); the export runs once per model.
`check_export` runs ONNX Runtime and PyTorch eager on the same images and reports the largest
absolute difference of each raw output and whether the post-processed detections are the same.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model import postprocess
from pipeline.eval.predictor import ModelInfo, Predictor, complete_output

RAW_OUTPUTS = ("cls", "box", "coef", "proto")
INPUT_NAME = "images"
METADATA_KEY = "maskaware"
RAW_TOLERANCE = 1e-4  # largest absolute difference of a raw output, ORT vs PyTorch (float32)
BOX_TOLERANCE = 1e-3  # px: decoded boxes scale the deltas' float32 rounding by exp() and the image size
MASK_PIXEL_TOLERANCE = 1e-3  # fraction of a mask's pixels that may flip at the threshold
CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"
EXPORT_LOGGER = "torch.onnx._internal.exporter._registration"  # warns about every torchvision op it lacks


class RawNetwork(nn.Module):
    """The exported part: images -> (cls, box, coef, proto), in `RAW_OUTPUTS` order."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images)
        return tuple(out[k] for k in RAW_OUTPUTS)


def export_onnx(predictor: Predictor, path: str | Path) -> Path:
    """Write the raw network of a checkpoint's predictor (CPU, eval mode) with its metadata."""
    model = predictor.model
    if model is None:
        raise ValueError(f"{predictor.source} has no torch model to export")
    if getattr(model, "mask_iou_net", None) is not None:
        raise ValueError("mask re-scoring (model.mask_rescoring) runs inside the post-processing on the "
                         "assembled masks: such a model cannot be exported to ONNX")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    S = predictor.info.scale
    net = RawNetwork(model.float().cpu().eval()).eval()
    example = torch.zeros(2, 3, S, S)  # batch 2: the batch dimension stays symbolic
    batch = torch.export.Dim("batch", min=1)
    quiet = logging.getLogger(EXPORT_LOGGER)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(net, (example,), dynamo=True, input_names=[INPUT_NAME],
                                    output_names=list(RAW_OUTPUTS), dynamic_shapes=({0: batch},),
                                    verbose=False)
    finally:
        quiet.setLevel(level)
    program.model.metadata_props[METADATA_KEY] = json.dumps(predictor.info.to_dict())
    program.save(str(path))
    return path


def read_info(path: str | Path, session=None) -> ModelInfo:
    """The `ModelInfo` an exported file carries (read through `session` when given); a clear
    error for a file that is not ours."""
    import onnxruntime as ort

    meta = (session or _session(path, ort)).get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise ValueError(f"{path} is an ONNX model without maskaware metadata (export it with "
                         f"python -m jobs.export)")
    return ModelInfo.from_dict(json.loads(meta[METADATA_KEY]))


def _session(path: str | Path, ort, providers: list[str] | None = None, threads: int = 0):
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"ONNX model {path} does not exist")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT warns about unused initializers otherwise
    options.intra_op_num_threads = threads  # 0: ORT's default, one per physical core
    try:
        return ort.InferenceSession(str(path), options, providers=providers or [CPU_PROVIDER])
    except Exception as e:  # ORT raises its own exception types for files it cannot parse
        raise ValueError(f"{path} is not a readable ONNX model: {str(e).splitlines()[0][:200]}") from None


def load_onnx(path: str | Path, device: str | torch.device = "cpu", threads: int = 0) -> Predictor:
    """A `Predictor` running the exported network in ONNX Runtime (CUDA provider on a CUDA device)."""
    import onnxruntime as ort

    dev = torch.device(device)
    # the CPU wheel has no CUDA provider: ORT then runs on the CPU
    on_gpu = dev.type == "cuda" and CUDA_PROVIDER in ort.get_available_providers()
    providers = [CUDA_PROVIDER, CPU_PROVIDER] if on_gpu else [CPU_PROVIDER]
    session = _session(path, ort, providers, threads)
    info = read_info(path, session)

    def run(images: torch.Tensor) -> dict:
        arrays = session.run(list(RAW_OUTPUTS), {INPUT_NAME: images.detach().float().cpu().numpy()})
        raw = {k: torch.from_numpy(a).to(dev) for k, a in zip(RAW_OUTPUTS, arrays)}
        return complete_output(raw, info)

    return Predictor(run=run, info=info, device=dev, source=f"onnx {path}")


def same_detections(a: list[dict], b: list[dict]) -> bool:
    """The same detections, in the same order: equal labels, scores within `RAW_TOLERANCE`, boxes
    within `BOX_TOLERANCE` px, and masks differing in at most `MASK_PIXEL_TOLERANCE` of their pixels
    (a pixel whose soft mask lies within ~1e-6 of the 0.5 threshold may fall either way)."""
    for pa, pb in zip(a, b, strict=True):
        if pa["labels"].shape != pb["labels"].shape or not torch.equal(pa["labels"], pb["labels"]):
            return False
        flipped = (pa["masks"] != pb["masks"]).flatten(1).float().mean(dim=1)  # [N] fraction per mask
        if len(flipped) and flipped.max() > MASK_PIXEL_TOLERANCE:
            return False
        if not (torch.allclose(pa["boxes"], pb["boxes"], rtol=0, atol=BOX_TOLERANCE)
                and torch.allclose(pa["scores"], pb["scores"], rtol=0, atol=RAW_TOLERANCE)):
            return False
    return True


def check_export(torch_predictor: Predictor, onnx_predictor: Predictor, images: torch.Tensor,
                 orig_sizes: list[tuple[int, int]]) -> dict[str, Any]:
    """Both routes on the same input [B, 3, S, S]: the largest |difference| of each raw output (and
    its largest |value|), the detection counts, whether the detections are the same, and `ok`."""
    with torch.no_grad():
        ref = torch_predictor.run(images.to(torch_predictor.device))
    got = onnx_predictor.run(images)
    diffs = {k: float((ref[k].float().cpu() - got[k].float().cpu()).abs().max()) for k in RAW_OUTPUTS}
    scale = {k: float(ref[k].float().abs().max()) for k in RAW_OUTPUTS}  # what float32 rounding scales with
    params = torch_predictor.info.postprocess
    det_ref = [{k: v.cpu() for k, v in d.items()} for d in postprocess(ref, orig_sizes, params)]
    det_got = [{k: v.cpu() for k, v in d.items()} for d in postprocess(got, orig_sizes, params)]
    same = same_detections(det_ref, det_got)
    return {"max_abs_diff": diffs, "max_abs_output": scale, "detections": [len(d["labels"]) for d in det_ref],
            "same_detections": same,
            "ok": same and max(diffs.values()) <= RAW_TOLERANCE}


def example_images(count: int, scale: int, seed: int = 0) -> torch.Tensor:
    """Random normalised images [count, 3, S, S] for the export check (fixed seed)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((count, 3, scale, scale)).astype(np.float32))


def run_export(checkpoint: str, out: str | Path, *, scale: int | None = None, tracking_uri: str | None = None,
               check_images: int = 2) -> dict[str, Any]:
    """`jobs.export`: load on CPU, export, check with ONNX Runtime; returns {path, scale, check}."""
    from pipeline.config import TrackingConfig
    from pipeline.eval.predictor import load_predictor

    predictor = load_predictor(checkpoint, "cpu", scale=scale, tracking=TrackingConfig(tracking_uri=tracking_uri),
                               precision="fp32")  # the exported graph is fp32
    path = export_onnx(predictor, out)
    S = predictor.info.scale
    check = check_export(predictor, load_onnx(path), example_images(check_images, S), [(S, S)] * check_images)
    return {"path": str(path), "scale": S, "classes": predictor.info.num_classes, "check": check}
