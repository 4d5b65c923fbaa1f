"""Benchmark: per-image anchor-assignment time of every assigner (python -m jobs.bench_assign).

For S = 550 it builds the two anchor grids of the paper's configs (generated here: jobs/ cannot
import model/), draws G realistic instances (random star-shaped polygons of COCO-like sizes,
rasterised at S×S) and times, per assigner, one call of `ASSIGNERS[name]` per image:
- "masks": gt_masks given, the integral images are built inside the call;
- "integrals": precomputed `MaskIntegrals` given (as the data pipeline provides them).
It also times a brute-force maIoU (every anchor rasterised and its mask pixels counted, no
integral image) over all anchors, the quantity the integral-image path replaces.
Mask-free assigners (fixed_iou, atss_iou/giou/diou) ignore masks, so both paths are the same.
Times are medians over --repeats calls after --warmup calls; CUDA calls are synchronised.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
from tqdm import tqdm

from assigners import ASSIGNERS, MaskIntegrals
from assigners.overlaps import EPS, box_iou

STRIDES = (8, 16, 32, 64, 128)
YOLACT_CELLS_550 = (69, 35, 18, 9, 5)  # the fixed-IoU configs' grid (550-based strides at any S)
MASK_AWARE = ("atss_maiou", "atss_gmaiou")
# COCO instance size mix (fractions of small < 32², medium < 96², large) and area bounds.
SIZE_MIX = ((0.41, 16, 32**2), (0.34, 32**2, 96**2), (0.25, 96**2, 400**2))


def atss_grid(size: int) -> tuple[torch.Tensor, list[int]]:
    """1 square anchor of 4·stride per cell, centred at the cell corner (j·s, i·s)."""
    boxes, counts = [], []
    for s in STRIDES:
        n = math.ceil(size / s)
        ys, xs = torch.meshgrid(torch.arange(n) * s, torch.arange(n) * s, indexing="ij")
        c = torch.stack([xs.flatten(), ys.flatten()], 1).float()  # [n², 2]
        boxes.append(torch.cat([c - 2 * s, c + 2 * s], 1))  # [n², 4]
        counts.append(n * n)
    return torch.cat(boxes), counts


def yolact_grid(size: int) -> tuple[torch.Tensor, list[int]]:
    """3 anchors per cell (h/w ratios 0.5, 1, 2) of size 3·base, base 8..128, centred at
    (i + 0.5)·550/n with n = 69, 35, 18, 9, 5 (the 550-based strides at every S, paper preset);
    cells = ceil(S / base) per level; row-major, ratio-minor."""
    boxes, counts = [], []
    for n550, s in zip(YOLACT_CELLS_550, STRIDES):
        n, step = math.ceil(size / s), 550 / n550
        ys, xs = torch.meshgrid((torch.arange(n) + 0.5) * step, (torch.arange(n) + 0.5) * step, indexing="ij")
        c = torch.stack([xs.flatten(), ys.flatten()], 1).float()  # [n², 2]
        r = torch.tensor([0.5, 1.0, 2.0]).sqrt()  # h/w = r² -> h = side·√r, w = side/√r
        half = torch.stack([3 * s / r, 3 * s * r], 1) / 2  # [3, 2] (w/2, h/2)
        cc = c[:, None, :]  # [n², 1, 2]
        boxes.append(torch.cat([cc - half, cc + half], 2).reshape(-1, 4))  # [3n², 4]
        counts.append(3 * n * n)
    return torch.cat(boxes), counts


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


def brute_maiou(gt: torch.Tensor, masks: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """maIoU [G, A] with |A∩M| counted pixel by pixel inside each (rounded, clipped) anchor."""
    h, w = masks.shape[1:]
    counts = torch.zeros((gt.shape[0], anchors.shape[0]), device=gt.device)
    for a, (x1, y1, x2, y2) in enumerate(torch.round(anchors).long().tolist()):
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if x2 > x1 and y2 > y1:
            counts[:, a] = masks[:, y1:y2, x1:x2].sum((1, 2))
    iou = box_iou(gt, anchors)
    area_b = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])  # [G]
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])  # [A]
    inter = iou * (area_b[:, None] + area_a[None])  / (1 + iou)  # [G, A] from IoU = I/(Sa+Sb-I)
    union = (area_b[:, None] + area_a[None] - inter).clamp(min=EPS)
    mob = masks.flatten(1).sum(1) / (area_b + EPS)  # [G]
    return torch.where(iou > 0, counts / mob[:, None] / union, torch.zeros_like(counts))


def median_time(fn, device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall seconds of fn() (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(size: int, gts: list[int], devices: list[str], repeats: int, warmup: int, brute: bool,
        seed: int) -> list[dict]:
    grids = {"atss": atss_grid(size), "fixed": yolact_grid(size)}
    rows = []
    jobs = [(d, g) for d in devices for g in gts]
    for device_name, g in tqdm(jobs, desc="bench_assign", file=sys.stderr):
        device = torch.device(device_name)
        gt, masks = polygon_instances(torch.Generator().manual_seed(seed + g), g, size)
        gt, masks = gt.to(device), masks.to(device)
        integrals = MaskIntegrals.from_masks(masks)
        for grid, (anchors, counts) in grids.items():
            anchors = anchors.to(device)
            for name, assign in ASSIGNERS.items():
                paths = {"masks": dict(gt_masks=masks), "integrals": dict(gt_masks=None, integral=integrals)}
                for path, kw in paths.items():
                    if path == "integrals" and name not in MASK_AWARE:
                        continue  # masks unused: one path
                    t = median_time(lambda: assign(gt, anchors=anchors, num_anchors_per_level=counts, **kw),
                                    device, repeats, warmup)
                    rows.append(dict(device=device_name, grid=grid, G=g, method=name,
                                     path=path if name in MASK_AWARE else "-", ms=t * 1e3))
            if brute:
                t = median_time(lambda: brute_maiou(gt, masks, anchors), device, max(1, repeats // 10), 1)
                rows.append(dict(device=device_name, grid=grid, G=g, method="brute_maiou", path="masks", ms=t * 1e3))
        rows.append(dict(device=device_name, grid="-", G=g, method="MaskIntegrals.from_masks", path="masks",
                         ms=median_time(lambda: MaskIntegrals.from_masks(masks), device, repeats, warmup) * 1e3))
    return rows


def table(rows: list[dict], gts: list[int]) -> str:
    """Markdown: one row per (device, grid, method, path), one column per G."""
    keys = sorted({(r["device"], r["grid"], r["method"], r["path"]) for r in rows},
                  key=lambda k: (k[0], k[1], k[2] == "brute_maiou", list(ASSIGNERS).index(k[2])
                                 if k[2] in ASSIGNERS else 99, k[3]))
    ms = {(r["device"], r["grid"], r["method"], r["path"], r["G"]): r["ms"] for r in rows}
    lines = ["| device | grid | method | path | " + " | ".join(f"G={g} (ms)" for g in gts) + " |",
             "|---|---|---|---|" + "---:|" * len(gts)]
    for k in keys:
        cells = [f"{ms[k + (g,)]:.3f}" if k + (g,) in ms else "" for g in gts]
        lines.append(f"| {' | '.join(k)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    ms = {(r["device"], r["grid"], r["method"], r["path"], r["G"]): r["ms"] for r in rows}
    out = []
    for (dev, grid, method, path, g), t in sorted(ms.items()):
        if method == "atss_maiou" and grid == "atss":
            base = ms.get((dev, grid, "atss_iou", "-", g))
            brute = ms.get((dev, grid, "brute_maiou", "masks", g))
            line = f"{dev} G={g} ATSS grid: atss_maiou[{path}] / atss_iou = {t / base:.2f}x"
            if brute:
                line += f"; brute-force maIoU / atss_maiou[{path}] = {brute / t:.0f}x"
            out.append(line)
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
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random polygons (default: 0)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rows = run(args.size, args.gts, devices, args.repeats, args.warmup, not args.no_brute, args.seed)
    print(f"S={args.size}, anchors: atss grid {len(atss_grid(args.size)[0])}, fixed grid "
          f"{len(yolact_grid(args.size)[0])}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(table(rows, args.gts))
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
