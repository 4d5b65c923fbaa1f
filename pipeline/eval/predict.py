"""Predicting on the user's own images or video (`jobs.predict`): overlays and COCO results.

`predict_images(predictor, paths, out_dir)` / `predict_video(predictor, path, out_dir)`:
1. read the images (or decode the frames) `batch_size` at a time; an image that does not decode
   is reported (`problems`) and left out, the others go on;
2. resize and normalise each as evaluation does (`predictor.network_input`), run the network
   (`Predictor.run`: PyTorch or ONNX Runtime) and the shared post-processing (`model.postprocess`
   with the checkpoint's `EvalConfig`), in original-image coordinates;
3. write under `out_dir`: `overlays/<name>.png` (or `<video>_overlay.mp4`) with masks, boxes, class
   names and scores of detections scoring at least `draw_thr`; `coco_results.json` (every
   detection: category ids of the training dataset, RLE masks, boxes); `bbox_results.json` and
   `segm_results.json`, the two files a COCO test-dev submission takes (rename them
   `detections_test-dev2017_<alg>_results.json` and zip each); `images.json`, which image id is
   which file (and its size).
Returns a summary: images, failed, skipped, detections, seconds, fps (images / wall time of the
whole loop, reading and writing included), device and model source.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model import postprocess
from pipeline.eval.coco_eval import MASK_SCORE, predictions_to_coco_results, write_results_json
from pipeline.eval.evaluate import OVERLAY_DIR, OVERLAY_SCORE_THR, RESULTS_FILE
from pipeline.eval.inputs import VideoWriter, image_ids, read_image, read_video
from pipeline.eval.overlays import draw_overlay
from pipeline.eval.predictor import Predictor, network_input

BBOX_FILE, SEGM_FILE, IMAGES_FILE = "bbox_results.json", "segm_results.json", "images.json"
DRAW_THR = OVERLAY_SCORE_THR  # overlays show confident detections only; the results keep all of them
BATCH_SIZE = 8


def _detect(predictor: Predictor, images: list[np.ndarray]) -> list[dict]:
    """Post-processed detections of a list of RGB uint8 images (original coordinates)."""
    S = predictor.info.scale
    batch = torch.stack([network_input(im, S) for im in images]).to(predictor.device)  # [B, 3, S, S]
    out = predictor.run(batch)
    return postprocess(out, [im.shape[:2] for im in images], predictor.info.postprocess)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def split_results(results: list[dict]) -> tuple[list[dict], list[dict]]:
    """COCO results -> (bbox results, segm results): what test-dev takes, one file per task.
    A mask's own score (YOLACT++ re-scoring) is its segm score."""
    keys = ("image_id", "category_id")
    bbox = [{**{k: r[k] for k in keys}, "bbox": r["bbox"], "score": r["score"]} for r in results]
    segm = [{**{k: r[k] for k in keys}, "segmentation": r["segmentation"],
             "score": r.get(MASK_SCORE, r["score"])} for r in results]
    return bbox, segm


def write_outputs(results: list[dict], images: list[dict], out_dir: Path) -> dict[str, str]:
    bbox, segm = split_results(results)
    paths = {"results": write_results_json(results, out_dir / RESULTS_FILE),
             "bbox": write_results_json(bbox, out_dir / BBOX_FILE),
             "segm": write_results_json(segm, out_dir / SEGM_FILE),
             "images": write_results_json(images, out_dir / IMAGES_FILE)}
    return {k: str(v) for k, v in paths.items()}


def _progress(total: int | None, unit: str) -> tqdm:
    # a live bar on a terminal only (disable=None); stderr keeps stdout for the JSON summary
    return tqdm(total=total or None, unit=unit, disable=None, file=sys.stderr, dynamic_ncols=True)


def _summary(predictor: Predictor, n: int, results: list[dict], seconds: float, **extra) -> dict[str, Any]:
    return {"images": n, "detections": len(results), "seconds": round(seconds, 3),
            "fps": round(n / seconds, 3) if seconds > 0 else 0.0, "device": str(predictor.device),
            "model": predictor.source, **extra}


def _overlay_names(paths: list[Path], ids: list[int]) -> list[str]:
    """`<stem>.png`, or `<id>-<stem>.png` when two inputs share a stem (a.jpg and a.png)."""
    stems = [p.stem for p in paths]
    unique = len(set(stems)) == len(stems)
    return [f"{s}.png" if unique else f"{i}-{s}.png" for s, i in zip(stems, ids)]


def predict_images(predictor: Predictor, paths: list[Path], out_dir: str | Path, *,
                   batch_size: int = BATCH_SIZE, draw_thr: float = DRAW_THR, skipped: list[str] = ()) -> dict:
    """Steps 1–3 of the module docstring for image files; see there for what is written."""
    out_dir, info = Path(out_dir), predictor.info
    ids = image_ids(paths)
    names = _overlay_names(paths, ids)
    results, images, problems = [], [], list(skipped)
    bar = _progress(len(paths), "img")
    for problem in skipped:
        bar.write(f"skipped {problem}", file=sys.stderr)
    start = time.perf_counter()
    for chunk in _batches(zip(paths, ids, names), batch_size):
        good = []
        for path, image_id, name in chunk:
            try:
                good.append((read_image(path), image_id, name, path))
            except ValueError as e:
                problems.append(str(e))
                bar.write(f"skipped {e}", file=sys.stderr)
        preds = _detect(predictor, [g[0] for g in good]) if good else []
        for pred, (image, image_id, name, path) in zip(preds, good):
            pred["image_id"] = image_id
            results += predictions_to_coco_results([pred], info.category_ids)
            images.append({"id": image_id, "file_name": str(path), "height": image.shape[0], "width": image.shape[1]})
            draw_overlay(image, pred, info.category_names, score_thr=draw_thr).save(
                _mkdir(out_dir / OVERLAY_DIR) / name, format="PNG")
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - start
    if not images:
        raise ValueError(f"no image could be read ({len(problems)} problem(s): {'; '.join(problems[:3])})")
    return _summary(predictor, len(images), results, seconds, failed=len(problems) - len(skipped),
                    skipped=len(skipped), problems=problems, outputs=write_outputs(results, images, out_dir))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def predict_video(predictor: Predictor, path: Path, out_dir: str | Path, *,
                  batch_size: int = BATCH_SIZE, draw_thr: float = DRAW_THR) -> dict:
    """Steps 1–3 for a video: frame i (from 1) is image id i; the overlays form `<stem>_overlay.mp4`."""
    out_dir, info = Path(out_dir), predictor.info
    frames, rate, count = read_video(path)
    video_out = _mkdir(out_dir) / f"{path.stem}_overlay.mp4"
    results, images = [], []
    bar = _progress(count, "frame")
    start = time.perf_counter()
    with VideoWriter(video_out, rate) as writer:
        for chunk in _batches(frames, batch_size):
            for frame, pred in zip(chunk, _detect(predictor, chunk)):
                pred["image_id"] = len(images) + 1
                results += predictions_to_coco_results([pred], info.category_ids)
                images.append({"id": pred["image_id"], "file_name": f"{path.name}#{pred['image_id']}",
                               "height": frame.shape[0], "width": frame.shape[1]})
                writer.write(np.asarray(draw_overlay(frame, pred, info.category_names, score_thr=draw_thr)))
            bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - start
    if not images:
        raise ValueError(f"video {path}: no frame could be decoded")
    outputs = write_outputs(results, images, out_dir)
    outputs["video"] = str(video_out)
    return _summary(predictor, len(images), results, seconds, failed=0, skipped=0, problems=[], outputs=outputs)


def run_predict(input_spec: str, out_dir: str | Path, *, checkpoint: str | None = None, onnx: str | None = None,
                device: str = "cpu", scale: int | None = None, tracking_uri: str | None = None,
                batch_size: int = BATCH_SIZE, draw_thr: float = DRAW_THR, precision: str | None = None) -> dict:
    """`jobs.predict`: the inputs are listed (and refused when there is nothing to read) before the
    model is loaded from `checkpoint` (directory, model.pt or MLflow run id) or `onnx`."""
    from pipeline.config import TrackingConfig
    from pipeline.eval.export import load_onnx
    from pipeline.eval.inputs import list_inputs
    from pipeline.eval.predictor import load_predictor

    if (checkpoint is None) == (onnx is None):
        raise ValueError("give exactly one of a checkpoint and an ONNX model")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    inputs = list_inputs(input_spec)
    if onnx is not None:
        predictor = load_onnx(onnx, device)
    else:
        predictor = load_predictor(checkpoint, device, scale=scale, precision=precision,
                                   tracking=TrackingConfig(tracking_uri=tracking_uri))
    if inputs.video is not None:
        return predict_video(predictor, inputs.video, out_dir, batch_size=batch_size, draw_thr=draw_thr)
    return predict_images(predictor, inputs.images, out_dir, batch_size=batch_size, draw_thr=draw_thr,
                          skipped=inputs.skipped)
