"""Benchmark: per-image anchor-assignment time of every assigner (python -m jobs.bench_assign).

For S = 550 it lays the two anchor grids of the paper's configs (the model's own, through
`pipeline.report.anchor_grids`), draws G realistic instances (random star-shaped polygons of COCO-like sizes,
rasterised at S×S) and times, per assigner, one call of `ASSIGNERS[name]` per image:
- "masks": gt_masks given, the integral images are built inside the call;
- "integrals": precomputed `MaskIntegrals` given (as the data pipeline provides them).
It also times maIoU over all anchors two ways: "dense_maiou" (integral images, as the overlap
function computes it) and "brute_maiou" (every anchor's pixel rectangle cut out of the masks and
its pixels counted, no integral image), and checks the two agree bit for bit.
Mask-free assigners (fixed_iou, atss_iou/giou/diou) ignore masks, so both paths are the same.
--batch B instead times a batch of B images (G instances each): the batch form
`ASSIGNERS[name].batch` (one call) against the per-image calls in a loop, with precomputed
integrals, and checks they assign alike.
Times are medians over --repeats calls after --warmup calls, taken round-robin over the methods
(one call of each per round, so that a busy machine slows all alike); CUDA calls are synchronised.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

import torch
from tqdm import tqdm

from assigners import ASSIGNERS, MaskIntegrals
from assigners.brute import brute_mask_aware_iou
from assigners.overlaps import mask_aware_iou
from pipeline.config import ASSIGNER_NAMES, ASSIGNER_TABLE
from pipeline.report.anchor_grids import input_anchors

MASK_AWARE = tuple(name for name, spec in ASSIGNER_TABLE.items() if spec.needs_masks)
# COCO instance size mix (fractions of small < 32², medium < 96², large) and area bounds.
SIZE_MIX = ((0.41, 16, 32**2), (0.34, 32**2, 96**2), (0.25, 96**2, 400**2))


def polygon_instances(gen: torch.Generator, g: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """G random star-shaped polygons of COCO-like sizes -> boxes float32 [G, 4], masks bool [G, S, S]."""
    masks = torch.zeros((g, size, size), dtype=torch.bool)
    boxes = torch.zeros((g, 4))
    u = lambda: float(torch.rand((), generator=gen))  # noqa: E731
    for i in range(g):
        p, pick = u(), 0
        while pick < len(SIZE_MIX) - 1 and p > SIZE_MIX[pick][0]:
            p -= SIZE_MIX[pick][0]
            pick += 1
        lo, hi = SIZE_MIX[pick][1:]
        area = math.exp(math.log(lo) + u() * (math.log(hi) - math.log(lo)))
        aspect = math.exp((u() - 0.5) * math.log(4))  # h/w in [0.5, 2]
        w, h = min(math.sqrt(area / aspect), size - 2), min(math.sqrt(area * aspect), size - 2)
        cx, cy = w / 2 + u() * (size - w), h / 2 + u() * (size - h)
        k = 5 + int(u() * 12)
        ang = torch.sort(torch.rand(k, generator=gen) * 2 * math.pi).values  # [k]
        rad = 0.5 + 0.5 * torch.rand(k, generator=gen)  # star-shaped: radius per vertex
        px, py = cx + rad * ang.cos() * w / 2, cy + rad * ang.sin() * h / 2  # [k] vertices
        x1, y1, x2, y2 = px.min(), py.min(), px.max(), py.max()
        boxes[i] = torch.stack([x1, y1, x2, y2])
        c0, c1 = int(x1), min(int(x2) + 1, size)
        r0, r1 = int(y1), min(int(y2) + 1, size)
        xs = torch.arange(c0, c1).float()[None, :] + 0.5  # pixel centres [1, w]
        ys = torch.arange(r0, r1).float()[:, None] + 0.5  # [h, 1]
        inside = torch.zeros((r1 - r0, c1 - c0), dtype=torch.bool)
        for j in range(k):  # even-odd rule, one edge at a time
            ax, ay, bx, by = px[j], py[j], px[(j + 1) % k], py[(j + 1) % k]
            crosses = (ay > ys) != (by > ys)  # [h, 1]
            xint = ax + (ys - ay) * (bx - ax) / (by - ay + 1e-12)  # [h, 1]
            inside ^= crosses & (xs < xint)
        masks[i, r0:r1, c0:c1] = inside
    return boxes, masks


def median_times(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                 warmup: int) -> dict[str, tuple[float, float]]:
    """(median, min) wall seconds of each fn(), timed round-robin (one call of each per round) so that a
    busy machine slows them all alike; synchronised on CUDA."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync()
            times[key].append(time.perf_counter() - t)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def run(size: int, gts: list[int], devices: list[str], repeats: int, warmup: int, brute: bool,
        seed: int) -> list[dict]:
    grids = {"atss": input_anchors("atss", size), "fixed": input_anchors("yolact", size)}
    rows = []
    jobs = [(d, g, grid) for d in devices for g in gts for grid in grids]
    for device_name, g, grid in tqdm(jobs, desc="bench_assign", file=sys.stderr):
        device = torch.device(device_name)
        gt, masks = polygon_instances(torch.Generator().manual_seed(seed + g), g, size)
        gt, masks = gt.to(device), masks.to(device)
        integrals = MaskIntegrals.from_masks(masks)
        anchors, counts = grids[grid]
        anchors = anchors.to(device)
        fns: dict[tuple[str, str], Callable[[], object]] = {}
        for name in ASSIGNER_NAMES:  # the benchmark-only brute force is timed as "brute_maiou"
            assign = ASSIGNERS[name]
            fns[(name, "masks" if name in MASK_AWARE else "-")] = partial(
                assign, gt, masks, anchors, counts)
            if name in MASK_AWARE:
                fns[(name, "integrals")] = partial(assign, gt, None, anchors, counts, integral=integrals)
        fns[("dense_maiou", "integrals")] = partial(mask_aware_iou, gt, anchors, integrals)
        fns[("MaskIntegrals.from_masks", "masks")] = partial(MaskIntegrals.from_masks, masks)
        for (method, path), (t, t_min) in median_times(fns, device, repeats, warmup).items():
            rows.append(dict(device=device_name, grid="-" if method.startswith("Mask") else grid, G=g,
                             method=method, path=path, ms=t * 1e3, ms_min=t_min * 1e3))
        if brute:
            fn = partial(brute_mask_aware_iou, gt, masks, anchors)
            t, t_min = median_times({"brute": fn}, device, max(1, repeats // 10), 0)["brute"]
            same = torch.equal(fn(), mask_aware_iou(gt, anchors, integrals))
            rows.append(dict(device=device_name, grid=grid, G=g, method="brute_maiou", path="masks",
                             ms=t * 1e3, ms_min=t_min * 1e3, same=same))
    return rows


def run_batch(size: int, batch: int, gts: list[int], repeats: int, warmup: int, seed: int) -> list[str]:
    """Batch form vs per-image loop, per assigner of the grids and G: lines of text."""
    lines = ["| G per image | assigner | per-image loop ms | batch form ms | loop / batch | same |", "|---|---|---:|---:|---:|---|"]
    for g in gts:
        imgs = [polygon_instances(torch.Generator().manual_seed(seed + 101 * i + g), g, size) for i in range(batch)]
        boxes, masks = [b for b, _ in imgs], [m for _, m in imgs]
        integrals = [MaskIntegrals.from_masks(m) for m in masks]
        for name in ASSIGNER_NAMES:
            anchors, counts = input_anchors(ASSIGNER_TABLE[name].anchor_grid, size)
            assign = ASSIGNERS[name]
            loop = lambda: torch.stack([assign(b, m, anchors, counts, i) for b, m, i in zip(boxes, masks, integrals)])  # noqa: E731
            once = partial(assign.batch, boxes, masks, anchors, counts, integrals)
            t = median_times({"loop": loop, "batch": once}, torch.device("cpu"), repeats, warmup)
            same = torch.equal(loop(), once())
            lines.append(f"| {g} | {name} | {t['loop'][0] * 1e3:.2f} | {t['batch'][0] * 1e3:.2f} | "
                         f"{t['loop'][0] / t['batch'][0]:.2f}x | {same} |")
    return lines


def table(rows: list[dict], gts: list[int]) -> str:
    """Markdown: one row per (device, grid, method, path), one column per G: median (min) ms."""
    order = list(ASSIGNER_NAMES) + ["dense_maiou", "brute_maiou"]
    keys = sorted({(r["device"], r["grid"], r["method"], r["path"]) for r in rows},
                  key=lambda k: (k[0], k[1], order.index(k[2]) if k[2] in order else -1, k[3]))
    cell = {(r["device"], r["grid"], r["method"], r["path"], r["G"]): f"{r['ms']:.3f} ({r['ms_min']:.3f})"
            for r in rows}
    lines = ["| device | grid | method | path | " + " | ".join(f"G={g}: median (min) ms" for g in gts) + " |",
             "|---|---|---|---|" + "---:|" * len(gts)]
    for k in keys:
        lines.append(f"| {' | '.join(k)} | " + " | ".join(cell.get(k + (g,), "") for g in gts) + " |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """The target ratios: mask-aware ATSS vs ATSS-IoU, and brute force vs the integral path."""
    by = {(r["device"], r["grid"], r["method"], r["path"], r["G"]): r for r in rows}
    same = [r["same"] for r in rows if "same" in r]
    out = [f"brute-force maIoU == integral-image maIoU (bit for bit) in {sum(same)}/{len(same)} cases"] if same else []

    def ratio(a, b):
        return f"{a['ms'] / b['ms']:.2f}x (min {a['ms_min'] / b['ms_min']:.2f}x)"

    for (dev, grid, method, path, g), r in sorted(by.items()):
        brute = by.get((dev, grid, "brute_maiou", "masks", g))
        if method == "atss_maiou" and grid == "atss":
            line = f"{dev} G={g} ATSS grid: atss_maiou[{path}] / atss_iou = {ratio(r, by[(dev, grid, 'atss_iou', '-', g)])}"
            if brute:
                line += f"; brute-force maIoU / atss_maiou[{path}] = {brute['ms'] / r['ms']:.0f}x"
            out.append(line)
        if method == "dense_maiou" and brute:
            out.append(f"{dev} G={g} {grid} grid: brute-force maIoU / integral-image maIoU, all anchors = "
                       f"{brute['ms'] / r['ms']:.0f}x")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.bench_assign", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=550, help="image side S in pixels (default: 550)")
    p.add_argument("--gts", type=int, nargs="+", default=[1, 8, 32],
                   help="numbers of GT instances per image to time (default: 1 8 32)")
    p.add_argument("--devices", nargs="+", default=None,
                   help="devices to time on (default: cpu, plus cuda when available)")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per measurement; the median is "
                   "reported; brute force uses repeats/10 (default: 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing (default: 3)")
    p.add_argument("--no-brute", action="store_true", help="skip the brute-force maIoU timing")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; 0 keeps torch's choice (default: 1: the per-image ops are "
                        "too small to gain from intra-op threads, and one thread keeps timings stable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random polygons (default: 0)")
    p.add_argument("--batch", type=int, default=0, metavar="B",
                   help="instead: batch form vs per-image loop over B images, CPU (default: off)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch:
        print(f"S={args.size}, batch {args.batch}, CPU, {torch.get_num_threads()} thread(s), median of {args.repeats}")
        print("\n".join(run_batch(args.size, args.batch, args.gts, args.repeats, args.warmup, args.seed)))
        return 0
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rows = run(args.size, args.gts, devices, args.repeats, args.warmup, not args.no_brute, args.seed)
    print(f"S={args.size}, anchors: atss grid {len(input_anchors('atss', args.size)[0])}, fixed grid "
          f"{len(input_anchors('yolact', args.size)[0])}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(table(rows, args.gts))
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
