"""Dataset analysis figures from the precomputed Parquet tables (PNG files):

    mob.png           the ground truths' mask-over-box ratios per category (paper Fig. 3a)
    iou_vs_maiou.png  joint histogram of ATSS anchors' IoU and maIoU with their GTs (Fig. 3c)

    python -m jobs.analyze [--data DIR] [--out analysis/] [--scale 550]

Without --data, the built-in synthetic dataset of --preset is analysed. Missing tables are
precomputed first (Ray Data, like `python -m jobs.precompute`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

from pipeline.data.datasets import SPLITS, dataset_dir, split_paths
from pipeline.data.precompute import precompute
from pipeline.data.table_dir import MANIFEST
from pipeline.presets import get_preset
from pipeline.report.analysis import analyze


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.analyze", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="dataset root directory (default: the synthetic dataset of --preset)")
    p.add_argument("--preset", default="tiny", help="config preset for the dataset layout and defaults (default: tiny)")
    p.add_argument("--split", choices=SPLITS, default="train", help="split to analyse (default: train)")
    p.add_argument("--parquet", default=None, help="the split's tables (default: <dataset root>/parquet/<split>)")
    p.add_argument("--out", default="analysis", help="output folder for the PNG files (default: ./analysis)")
    p.add_argument("--scale", type=int, default=550, help="network input size S for the anchors (default: 550)")
    p.add_argument("--max-images", type=int, default=200,
                   help="images used for the IoU vs maIoU histogram, 0 = all (default: 200)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = replace(get_preset(args.preset).data, data_dir=args.data)
        parquet = args.parquet or os.path.join(dataset_dir(cfg), "parquet", args.split)
        if not os.path.exists(os.path.join(parquet, MANIFEST)):
            json_path, image_root = split_paths(cfg, args.split)
            precompute(json_path, image_root, parquet, layout=cfg.parquet_layout,
                       images_per_shard=cfg.parquet_images_per_shard, num_workers=cfg.precompute_workers)
        summary = analyze(parquet, args.out, scale=args.scale, max_images=args.max_images or None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
