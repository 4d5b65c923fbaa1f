"""Latency on CPU of YOLACT-550 R50's network: ONNX Runtime vs PyTorch eager, side by side.

    python -m jobs.bench_onnx                         # 550, ResNet-50, 80 classes, ATSS grid, 2 threads
    python -m jobs.bench_onnx --size 320 --rounds 5 --json out.json

A randomly initialised model (latency does not depend on the weights) is written as a checkpoint,
exported with `jobs.export`'s code (which also checks ORT against PyTorch), and both routes time
the same input at batch 1: the network up to its raw outputs, the part ONNX holds (post-processing
is the same torch code for both; `jobs.bench_model` times it). The routes alternate for `--rounds`
rounds of `--runs` timed runs each (after `--warmup`), so load on a shared machine hits both alike;
it prints the median ms of each route over all runs and the ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.bench_onnx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=550, help="input size S (default 550)")
    p.add_argument("--backbone", default="resnet50", help="resnet18 | resnet50 | resnet101 (default resnet50)")
    p.add_argument("--assigner", default="atss_maiou", help="sets the anchor grid (default atss_maiou: ATSS grid)")
    p.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="alternations of the two routes (default 3)")
    p.add_argument("--runs", type=int, default=10, help="timed runs per route and round (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per route and round (default 3)")
    p.add_argument("--json", default=None, help="also write the result here")
    return p


def _time(fn, x, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from pipeline.config import Config, apply_overrides
    from pipeline.eval.export import RAW_OUTPUTS, check_export, example_images, export_onnx, load_onnx
    from pipeline.eval.predictor import load_predictor
    from pipeline.eval.model_files import CONFIG_FILE, MODEL_FILE, build_model

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp)
        # COCO's 80 classes; the dataset is absent, so the categories are numbered 1..80 (a warning)
        cfg = apply_overrides(Config(), [f"data.scale={args.size}", f"model.backbone={args.backbone}",
                                         f"train.assigner={args.assigner}", "train.amp=false",
                                         f"data.data_dir={ckpt / 'coco'}"])
        torch.save(build_model(cfg, load_pretrained=False).state_dict(), ckpt / MODEL_FILE)
        (ckpt / CONFIG_FILE).write_text(json.dumps(cfg.to_dict()))
        eager = load_predictor(str(ckpt), precision="fp32")  # as ONNX Runtime runs it
        onnx = load_onnx(export_onnx(eager, ckpt / "model.onnx"), threads=args.threads)
        x = example_images(1, args.size)
        check = check_export(eager, onnx, x, [(args.size, args.size)])
        raw_eager = torch.no_grad()(lambda t: eager.model(t))
        times = {"torch_eager": [], "onnxruntime": []}  # onnxruntime: session + the anchors, as predict runs it
        for _ in range(args.rounds):
            times["torch_eager"] += _time(raw_eager, x, args.warmup, args.runs)
            times["onnxruntime"] += _time(onnx.run, x, args.warmup, args.runs)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"size": args.size, "backbone": args.backbone, "anchor_grid": eager.info.anchor_grid,
              "threads": args.threads, "runs": args.rounds * args.runs, "ms_median": med,
              "ort_speedup": med["torch_eager"] / med["onnxruntime"], "check_max_abs_diff": check["max_abs_diff"],
              "check_max_abs_output": check["max_abs_output"], "check_detections": check["detections"],
              "check_same_detections": check["same_detections"], "outputs": list(RAW_OUTPUTS)}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
