"""Speed of YOLACT-550 R50: forward and post-processing ms, fixed-IoU head vs ATSS head.

    python -m jobs.bench_model                      # CPU (2 threads), and CUDA when present
    python -m jobs.bench_model --devices cuda --batches 1 8 --json out.json

For every device × anchor grid × batch × precision it prints the median over `--runs` timed runs
(after `--warmup` untimed ones, synchronised) of: forward ms, post-processing ms, end-to-end ms and
images per second. Precisions (`--precisions`): fp32, and bf16 autocast where the device has native
bf16 (CUDA; CPUs with AVX-512 BF16 or AMX) — what `eval.precision` selects; `--channels-last`
(default: `EvalConfig.channels_last`) converts the model and input to channels_last; `--compile`
also times the `torch.compile`d model (`eval.compile`; compile time excluded, reported apart).

Post-processing is timed on a worst-case output: a randomly initialised head scores nothing above
0.05 (post-processing would then do no work), so the class logits are replaced by N(0, 3²) noise,
which gives every image the full candidate set, Fast NMS on 80 classes × 200 and 100 masks pasted
at `--orig-size` (COCO-like 480×640 by default). The box deltas are replaced by N(0, 1) noise too
(boxes about their anchors' size, as a trained head predicts): the random R50 head's own deltas
(sd ≈ 36) decode to boxes covering most of the image (median 86 %). The forward pass is the real network.
"""
from __future__ import annotations

import argparse
import json
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.bench_model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=550, help="input size S (default 550)")
    p.add_argument("--backbone", default="resnet50", help="resnet18 | resnet50 | resnet101 (default resnet50)")
    p.add_argument("--num-classes", type=int, default=80, help="classes C (default 80, COCO)")
    p.add_argument("--grids", nargs="+", default=["yolact", "atss"],
                   help="anchor grids to compare (default: yolact atss = 19,248 vs 6,416 anchors at 550)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    p.add_argument("--devices", nargs="+", default=None,
                   help="cpu and/or cuda (default: cpu, plus cuda when available)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2, our dev machine)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs (default 5 on CUDA, 1 on CPU)")
    p.add_argument("--runs", type=int, default=None, help="timed runs (default 30 on CUDA, 3 on CPU)")
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                   help="eval.precision values to time (default: both; bf16 only where native)")
    p.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                   help="channels_last memory format (auto: EvalConfig's default)")
    p.add_argument("--compile", action="store_true", help="time the torch.compile'd model instead")
    p.add_argument("--orig-size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"),
                   help="original image size the masks are resized to (default 480 640)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def _median_ms(fn, device, warmup: int, runs: int) -> float:
    from pipeline.eval.speed import measure_fps  # heavy imports after --help
    return measure_fps(lambda _: fn(), [None], warmup=warmup, runs=runs, device=device)["ms_median"]


def bench(args) -> list[dict]:
    import torch

    from model import Yolact, format_parameter_summary
    from pipeline.config import EvalConfig
    from pipeline.eval.runtime import inference_precision
    torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    eval_cfg = EvalConfig(channels_last={"on": True, "off": False}.get(args.channels_last, EvalConfig.channels_last),
                          compile=args.compile)
    rows = []
    for dev_name in devices:
        device = torch.device(dev_name)
        cuda = device.type == "cuda"
        warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
        runs = args.runs if args.runs is not None else (30 if cuda else 3)
        precisions = list(dict.fromkeys(inference_precision(device, False, p) for p in args.precisions))
        for grid in args.grids:
            torch.manual_seed(0)
            net = Yolact(args.num_classes, args.backbone, grid).eval().to(device)
            if grid == args.grids[0] and dev_name == devices[0]:
                print(format_parameter_summary(net))
            if eval_cfg.channels_last:
                net = net.to(memory_format=torch.channels_last)
            for batch in args.batches:
                x = torch.randn(batch, 3, args.size, args.size, device=device)
                for precision in precisions:
                    rows.append(_time_one(net, x, precision, eval_cfg, device, warmup, runs, args))
    return rows


def _time_one(net, x, precision: str, eval_cfg, device, warmup: int, runs: int, args) -> dict:
    """Forward, post-processing and end-to-end ms of one (model, batch, precision), as evaluation runs them."""
    import time

    import torch

    from model import postprocess
    from pipeline.eval.evaluate import fps_setup
    from pipeline.eval.runtime import inference_autocast
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    model = torch.compile(net) if eval_cfg.compile else net
    if eval_cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def forward():
        with torch.no_grad(), inference_autocast(device, precision):
            return model(x)
    t0 = time.perf_counter()
    out = forward()  # the first call compiles with --compile
    first_s = time.perf_counter() - t0
    g = torch.Generator(device=device).manual_seed(0)
    out["cls"] = 3 * torch.randn(out["cls"].shape, generator=g, device=device)
    out["box"] = torch.randn(out["box"].shape, generator=g, device=device)
    sizes = [tuple(args.orig_size)] * x.shape[0]
    fwd = _median_ms(forward, device, warmup, runs)
    post = _median_ms(lambda: postprocess(out, sizes, eval_cfg), device, warmup, runs)
    dets = postprocess(out, sizes, eval_cfg)
    row = {"setup": fps_setup(device, eval_cfg, precision, x.shape[0]), "grid": net.anchor_grid,
           "anchors": int(out["anchors"].shape[0]), "batch": x.shape[0], "forward_ms": round(fwd, 2),
           "post_ms": round(post, 2), "total_ms": round(fwd + post, 2),
           "images_per_s": round(1e3 * x.shape[0] / (fwd + post), 1),
           "detections_per_image": len(dets[0]["scores"]), "first_call_s": round(first_s, 1),
           "precision": precision,
           "peak_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20) if cuda else None}
    print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rows = bench(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
