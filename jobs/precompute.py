"""Precompute per-instance Parquet tables (mask RLE, box, area, MOB ratio, region integral
image) of a COCO-format dataset with Ray Data.

    python -m jobs.precompute --data DIR --out OUT

DIR holds annotations/{train,val}.json and images/ (the layout `jobs.synth` writes; other
layouts via --train-json/--val-json/--image-root). Without --data, the built-in synthetic
dataset of the chosen preset is used (generated on first use). Tables of a split go to
OUT/<split>/shard-*.parquet. Rerunning skips finished shards. Uses the Ray cluster in
RAY_ADDRESS if set, else starts a local one with --workers CPUs.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from pipeline.config import DataConfig

from pipeline.presets import get_preset
from pipeline.data.datasets import SPLITS
from pipeline.data.instance_table import LAYOUTS
from pipeline.data.precompute import precompute_splits, result_summary, verify


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = DataConfig()
    p = argparse.ArgumentParser(prog="python -m jobs.precompute", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None,
                   help="dataset root directory (default: the synthetic dataset of --preset)")
    p.add_argument("--preset", default="tiny", help="config preset for the synthetic default (default: tiny)")
    p.add_argument("--out", default=None, help="output directory (default: <dataset root>/parquet)")
    p.add_argument("--splits", default=",".join(SPLITS), help=f"comma-separated splits (default: {','.join(SPLITS)})")
    p.add_argument("--train-json", default=d.train_json, help=f"train annotations, relative to --data (default: {d.train_json})")
    p.add_argument("--val-json", default=d.val_json, help=f"val annotations, relative to --data (default: {d.val_json})")
    p.add_argument("--image-root", default=d.image_root,
                   help=f"image folder relative to --data; may contain {{split}} (default: {d.image_root})")
    p.add_argument("--layout", choices=LAYOUTS, default=d.parquet_layout,
                   help=f"store region integral images, or only RLE (default: {d.parquet_layout})")
    p.add_argument("--images-per-shard", type=int, default=d.parquet_images_per_shard,
                   help=f"images per Parquet file (default: {d.parquet_images_per_shard})")
    p.add_argument("--workers", type=int, default=d.precompute_workers,
                   help=f"concurrent Ray Data tasks (default: {d.precompute_workers})")
    p.add_argument("--skip-invalid", action="store_true", help="drop invalid records instead of failing")
    p.add_argument("--overwrite", action="store_true", help="replace tables made with other inputs or settings")
    p.add_argument("--verify", action="store_true", help="afterwards, re-read and re-validate every shard")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = replace(get_preset(args.preset).data, data_dir=args.data, train_json=args.train_json,
                      val_json=args.val_json, image_root=args.image_root, skip_invalid=args.skip_invalid,
                      parquet_dir=args.out, parquet_layout=args.layout,
                      parquet_images_per_shard=args.images_per_shard, precompute_workers=args.workers)
        splits = [s.strip() for s in args.splits.split(",") if s.strip()]
        results = precompute_splits(cfg, splits, overwrite=args.overwrite, progress=not args.quiet)
        for split, result in results.items():
            s = result_summary(result)
            if args.skip_invalid:
                print(f"{split}: {result.validation}")
            print(f"{split}: {s['rows']} instances in {s['shards']} shards at {result.out_dir} "
                  f"({len(result.written)} written, {len(result.skipped)} already done); "
                  f"{s['bytes_per_instance']:.0f} B/instance; "
                  + (f"{s['instances_per_second']:.0f} instances/s" if result.written else "nothing to do"))
            if args.verify:
                print(f"{split}: verified {verify(result.out_dir)} rows")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
