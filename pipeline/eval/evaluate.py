"""Evaluating a trained model on the validation set: COCO metrics, fps, overlays. No Ray.

`evaluate_model(model, val_set, eval_cfg, device, rank=0, world=1, out_dir=None)`:
1. every rank takes rank 0's parameters and buffers (`broadcast_state`): under DDP each rank's
   BatchNorm statistics drift apart after the last synchronising forward, and the checkpoint
   holds rank 0's, so this is what makes the logged metrics equal `jobs.evaluate`'s on that
   checkpoint, digit for digit, whatever the number of workers (on the same kind of device:
   `jobs.evaluate --device cuda` for a run trained on GPUs, whose precision is in its config);
2. every rank predicts its share of the val images — whole global batches dealt out
   round-robin (`shard_batches`), so each image meets the same batch as in one process (eval
   resize, no augmentation) — post-processes them to original-image coordinates
   (`model.postprocess`) and turns them into COCO results (RLE masks, original category ids)
   right away, so only compact results cross processes;
3. the results are gathered on rank 0 (`all_gather_object` when a process group is up) in the
   dataset's image order, which computes `segm/…` and `bbox/…` AP and oLRP, and per-class AP
   `segm_AP/<class>`, `bbox_AP/<class>` (`pipeline.eval.coco_eval`), the fps of model +
   post-processing at batch 1 (`pipeline.eval.speed`; with `fps_setup`, what it measured; none
   when `fps_runs` is 0), and writes `coco_results.json`,
   `per_class_ap.csv` and `overlays/<image_id>.png` for the first `eval_cfg.overlays` images into
   `out_dir`, with `per_image.npz`, the per-image outcome of COCO's matching that the report's
   bootstrap resamples (`pipeline.eval.image_eval`).
Rank 0 returns the metrics (plus `num_anchors`); the other ranks return {}. Steps 2–3 run as
`inference_setup` says: `eval.precision` (bf16 autocast where the device has bf16),
`eval.channels_last`, `eval.compile`, with the training worker's CPU thread count.

`evaluate_checkpoint(path, ...)` rebuilds the model from a checkpoint's `config.json` and runs
the same in one process (`jobs.evaluate`); `checkpoint_speed(path, eval_cfg)` only times it.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from model import postprocess
from model.anchors import count_anchors, pyramid_sizes
from pipeline.config import EvalConfig
from pipeline.data.coco import load_image
from pipeline.data.datasets import InstanceDataset, build_dataset, collate
from pipeline.data.precompute import ensure_precomputed
from pipeline.eval import image_eval
from pipeline.eval.coco_eval import (evaluate_per_image, predictions_to_coco_results, write_per_class_csv,
                                     write_results_json)
from pipeline.eval.model_files import load_checkpoint, unwrap
from pipeline.eval.overlays import save_overlay
from pipeline.eval.runtime import (FP32, all_gather, broadcast_state, channels_last, cpu_threads,
                                   inference_autocast, inference_model, inference_precision)
from pipeline.eval.speed import describe_setup, measure_fps

RESULTS_FILE = "coco_results.json"
PER_CLASS_FILE = "per_class_ap.csv"  # class, segm_AP, bbox_AP
PER_IMAGE_FILE = "per_image.npz"  # `pipeline.eval.image_eval`: what the report resamples
OVERLAY_DIR = "overlays"
OVERLAY_SCORE_THR = 0.3  # draw only confident detections; evaluation uses all of them


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, orig_sizes: list[tuple[int, int]],
            eval_cfg: EvalConfig, precision: str = FP32) -> list[dict]:
    """Post-processed detections of one batch (original-image coordinates); `precision` from
    `runtime.inference_precision`, the model already in channels_last when `eval_cfg` asks."""
    if eval_cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with inference_autocast(images.device, precision):
        out = model(images)
    return postprocess(out, orig_sizes, eval_cfg)


@torch.no_grad()
def predict_results(model: nn.Module, dataset: InstanceDataset, indices: list[int],
                    eval_cfg: EvalConfig, device: torch.device, batch_size: int,
                    precision: str = FP32, progress: bool = False) -> list[dict]:
    """COCO results (RLE masks, original category ids) of `dataset[indices]`; `progress`: a bar
    over the images on stderr."""
    results: list[dict] = []
    bar = tqdm(total=len(indices), desc="evaluate", unit="img", disable=not progress)
    for start in range(0, len(indices), batch_size):
        batch = collate([dataset[i] for i in indices[start:start + batch_size]])
        preds = predict(model, batch.images.to(device), [t["orig_size"] for t in batch.targets],
                        eval_cfg, precision)
        for p, t in zip(preds, batch.targets):
            p["image_id"] = t["image_id"]
        results += predictions_to_coco_results(preds, dataset.label_to_category)
        bar.update(len(preds))
    bar.close()
    return results


def speed(model: nn.Module, dataset: InstanceDataset, eval_cfg: EvalConfig,
          device: torch.device, precision: str = FP32) -> dict[str, Any]:
    """fps of model + post-processing at batch 1 (inputs already on the device); `setup` says so."""
    n = min(len(dataset), max(eval_cfg.fps_warmup + eval_cfg.fps_runs, 1), 8)
    items = [dataset[i] for i in range(n)]
    inputs = [(it["image"][None].to(device), [it["orig_size"]]) for it in items]  # [1, 3, S, S]
    fps = measure_fps(lambda x: predict(model, x[0], x[1], eval_cfg, precision), inputs,
                      warmup=eval_cfg.fps_warmup, runs=eval_cfg.fps_runs, device=device, precision=precision)
    return {**fps, "setup": fps_setup(device, eval_cfg, precision)}


def fps_setup(device: torch.device, eval_cfg: EvalConfig, precision: str, batch: int = 1) -> str:
    """What an fps figure of `speed` measures, e.g. 'cpu (2 threads), bf16-autocast, channels-last,
    batch 1, model + post-processing'."""
    layout = [name for name, on in (("channels-last", eval_cfg.channels_last),
                                    ("torch.compile", eval_cfg.compile)) if on]
    return describe_setup(device, ", ".join([precision, *layout]), "model + post-processing", batch)


def write_overlays(model: nn.Module, dataset: InstanceDataset, count: int, out_dir: Path,
                   eval_cfg: EvalConfig, device: torch.device, precision: str = FP32) -> list[Path]:
    paths = []
    for i in range(min(count, len(dataset))):
        item = dataset[i]
        record = dataset.record(i)
        pred = predict(model, item["image"][None].to(device), [item["orig_size"]], eval_cfg, precision)[0]
        paths.append(save_overlay(out_dir / OVERLAY_DIR / f"{item['image_id']}.png",
                                  load_image(record.path, record.image_id), pred,
                                  dataset.category_names, score_thr=OVERLAY_SCORE_THR))
    return paths


def shard_batches(n: int, batch_size: int, rank: int, world: int) -> list[int]:
    """This rank's image indices: the global batches [0, b), [b, 2b), … dealt out round-robin.

    Every batch holds the same images whatever the number of ranks (only the last one may be
    short), so each image goes through the network in the same batch as in one process.
    """
    starts = range(rank * batch_size, n, world * batch_size)
    return [i for s in starts for i in range(s, min(s + batch_size, n))]


def in_dataset_order(dataset: InstanceDataset, results: list[dict]) -> list[dict]:
    """`results` stably sorted by their image's position in the dataset: the order one process
    produces, which COCOeval's tie-breaking between equal scores depends on."""
    position = {int(image_id): i for i, image_id in enumerate(dataset.image_ids)}
    return sorted(results, key=lambda r: position[int(r["image_id"])])


def evaluate_model(model: nn.Module, dataset: InstanceDataset, eval_cfg: EvalConfig,
                   device: torch.device, *, batch_size: int = 4, amp: bool = False, rank: int = 0,
                   world: int = 1, threads: int = 1, out_dir: str | Path | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """Metrics on rank 0 (see the module docstring); {} on the other ranks. `progress`: a bar
    over rank 0's images (a one-process evaluation on a terminal).

    On a CPU device everything runs with `threads` torch threads: pass the training worker's
    count (`train.cpus_per_worker`) for numbers that equal the run's own, digit for digit.
    """
    core = unwrap(model)
    was_training = core.training
    core.eval()
    try:
        broadcast_state(core, world)  # before any change of memory format (collectives want dense tensors)
        with inference_setup(core, eval_cfg, device, amp, threads) as (net, precision):
            return _evaluate(core, net, dataset, eval_cfg, device, batch_size, precision, rank, world, out_dir,
                             progress and rank == 0)
    finally:
        core.train(was_training)


@contextmanager
def inference_setup(core: nn.Module, eval_cfg: EvalConfig, device: torch.device, amp: bool, threads: int):
    """(model to call, precision) for the block: `threads` CPU threads, the model in channels_last
    and/or compiled as `eval_cfg` asks (its layout restored afterwards), bf16 autocast where
    `eval.precision` (or a CUDA run's `amp`) asks and the device computes bf16 natively — then
    through a copy with batch norm folded and conv weights in bf16 (`model.fold`)."""
    precision = inference_precision(device, amp, eval_cfg.precision)  # checks eval.precision first
    with cpu_threads(device, threads), channels_last(core, eval_cfg.channels_last):
        net = inference_model(core, precision)
        yield (torch.compile(net) if eval_cfg.compile else net), precision


def _evaluate(core: nn.Module, net: nn.Module, dataset: InstanceDataset, eval_cfg: EvalConfig,
              device: torch.device, batch_size: int, precision: str, rank: int, world: int,
              out_dir: str | Path | None, progress: bool) -> dict[str, Any]:
    """Steps 2–3 of the module docstring: `net` (the model as `inference_setup` runs it) predicts."""
    mine = shard_batches(len(dataset), batch_size, rank, world)
    mine_results = predict_results(net, dataset, mine, eval_cfg, device, batch_size, precision, progress)
    results = in_dataset_order(dataset, [r for part in all_gather(mine_results, world) for r in part])
    if rank != 0:
        return {}
    metrics, per_image = evaluate_per_image(dataset.coco, results, segm_area_from_box=eval_cfg.segm_area_from_box)
    if eval_cfg.fps_runs > 0:  # else no fps at all (a sweep measures it in its own pass)
        fps = speed(net, dataset, eval_cfg, device, precision)
        metrics.update(fps=fps["fps"], fps_setup=fps["setup"])
    metrics["num_anchors"] = count_anchors(core.anchor_grid, pyramid_sizes(dataset.params.scale),
                                           core.scales_per_level)
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_results_json(results, out_dir / RESULTS_FILE)
        image_eval.save(per_image, out_dir / PER_IMAGE_FILE)
        write_per_class_csv(metrics, out_dir / PER_CLASS_FILE)
        write_overlays(net, dataset, eval_cfg.overlays, out_dir, eval_cfg, device, precision)
    return metrics


def evaluate_checkpoint(path: str | Path, *, out_dir: str | Path, data_dir: str | None = None,
                        overrides: list[str] = (), device: str = "cpu",
                        config_file: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Evaluate a checkpoint of ours on its (or `data_dir`'s) validation set, in one process.

    Every problem with the inputs (no such path, not a checkpoint, a corrupt file, no config, a
    dataset that is not there) is a one-line `ValueError` before any work starts."""
    cfg, model = load_checkpoint(path, data_dir, overrides, config_file)
    if cfg.data.source == "parquet" or cfg.data.integrals == "parquet":
        ensure_precomputed(cfg.data)  # a dataset met for the first time: its tables, once
    dev = torch.device(device)
    model.to(dev)
    val_set = build_dataset(cfg.data, "val")  # the train split is not even read
    return evaluate_model(model, val_set, cfg.eval, dev, batch_size=cfg.train.batch_size,
                          amp=cfg.train.amp, threads=cfg.train.cpus_per_worker, out_dir=out_dir,
                          progress=progress)


def checkpoint_speed(path: str | Path, eval_cfg: EvalConfig, device: str = "cpu") -> dict[str, Any]:
    """`speed` of a checkpoint's model on its validation images with `eval_cfg`'s inference
    settings and the training worker's thread count, in this process: how a sweep times every
    cell, one after the other once all trials are done (`pipeline.sweep.driver`)."""
    cfg, model = load_checkpoint(path)
    dev = torch.device(device)
    model.to(dev).eval()
    val_set = build_dataset(cfg.data, "val")
    with inference_setup(model, eval_cfg, dev, cfg.train.amp, cfg.train.cpus_per_worker) as (net, precision):
        return speed(net, val_set, eval_cfg, dev, precision)

