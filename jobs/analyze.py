"""Dataset analysis figures from the precomputed Parquet tables (PNG files):

    mob.png           the ground truths' mask-over-box ratios per category (paper Fig. 3a)
    iou_vs_maiou.png  joint histogram of ATSS anchors' IoU and maIoU with their GTs (Fig. 3c)

    python -m jobs.analyze [--data DIR] [--out analysis/] [--scale 550]

Without --data, the built-in synthetic dataset of --preset is analysed. Missing tables are
precomputed first (Ray Data, like `python -m jobs.precompute`).

With --checkpoint C, a trained model's loss terms per MOB bin instead (paper Fig. 2): negatives
of IoU 0.3–0.5 (classification) and positives of IoU 0.5–0.7 (classification, box, mask), mean ±
std and the anchor count per bin, as loss_by_mob.png + loss_by_mob.csv, also logged to MLflow:

    python -m jobs.analyze --checkpoint RUN/checkpoint_…/ [--split train] [--max-images 200]
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
                   help="images used for the IoU vs maIoU histogram (or Fig. 2), 0 = all (default: 200)")
    p.add_argument("--checkpoint", default=None, metavar="DIR",
                   help="a checkpoint of ours: write Fig. 2 (loss terms by MOB) for it instead; the data, "
                        "scale and assigner are the checkpoint config's (--data replaces its data_dir)")
    p.add_argument("--device", default="cpu", help="with --checkpoint: torch device (default: cpu)")
    p.add_argument("--no-mlflow", action="store_true", help="with --checkpoint: do not log to MLflow")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="with --checkpoint: override the checkpoint's config (e.g. tracking.tracking_uri=URI)")
    return p.parse_args(argv)


def _checkpoint(args: argparse.Namespace) -> dict:
    from pipeline.report.checkpoint_analysis import analyze_checkpoint  # torch model: only when asked

    return analyze_checkpoint(args.checkpoint, out_dir=args.out, split=args.split,
                              max_images=args.max_images or None, data_dir=args.data,
                              overrides=args.overrides, device=args.device, log=not args.no_mlflow)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.checkpoint is not None:
            print(json.dumps(_checkpoint(args), indent=1))
            return 0
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
