"""Precompute per-instance Parquet tables (mask RLE, box, area, MOB ratio, region integral
image) of a COCO-format dataset with Ray Data.

    python -m jobs.precompute --data DIR --out OUT

DIR holds annotations/{train,val}.json and images/ (the layout `jobs.synth` writes; other
layouts via --set data.train_json=… data.val_json=… data.image_root=…). Without --data, the built-in synthetic
dataset of the chosen preset is used (generated on first use). Tables of a split go to
OUT/<split>/shard-*.parquet and OUT/<split>/images.parquet (with --scales 550: also
OUT/<split>/scaled-550/, the exact integral images of the masks resized to 550×550 that
evaluation and training with data.augment=false read with data.integrals=parquet; training and
evaluation make them on first use). Every image is decoded once: an
unreadable one is an error naming its file (or, with data.skip_invalid=true, left out and
reported). Rerunning skips finished shards. Uses the Ray cluster in
RAY_ADDRESS if set, else starts a local one with data.precompute_workers CPUs.
"""
from __future__ import annotations

import argparse
import sys

from pipeline.config import DataConfig, apply_overrides
from pipeline.data.datasets import SPLITS
from pipeline.data.instance_table import LAYOUTS
from pipeline.data.precompute import precompute_splits, result_summary
from pipeline.data.table_dir import verify
from pipeline.presets import get_preset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = DataConfig()
    p = argparse.ArgumentParser(
        prog="python -m jobs.precompute", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The layout of the dataset and of the tables are data settings: --set data.train_json=…, "
               f"data.val_json=…, data.image_root=… (may contain {{split}}), data.parquet_layout="
               f"{'|'.join(LAYOUTS)} (default {d.parquet_layout}), data.parquet_images_per_shard=N "
               f"(default {d.parquet_images_per_shard}), data.precompute_workers=N (concurrent Ray Data "
               f"tasks, default {d.precompute_workers}), data.skip_invalid=true (drop invalid records "
               "and report them instead of failing).")
    p.add_argument("--data", default=None,
                   help="dataset root directory (default: the synthetic dataset of --preset)")
    p.add_argument("--preset", default="tiny", help="config preset for the synthetic default (default: tiny)")
    p.add_argument("--out", default=None, help="output directory (default: <dataset root>/parquet)")
    p.add_argument("--splits", default=",".join(SPLITS), help=f"comma-separated splits (default: {','.join(SPLITS)})")
    p.add_argument("--scales", default="", metavar="S[,S…]",
                   help="also store the exact integral images of the masks resized to S×S, for the "
                        "unaugmented routes: evaluation, training with data.augment=false (default: none)")
    p.add_argument("--overwrite", action="store_true", help="replace tables made with other inputs or settings")
    p.add_argument("--verify", action="store_true", help="afterwards, re-read and re-validate every shard")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.FIELD=VALUE",
                   help="override a data setting, repeatable (see below) (default: none)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        given = [f"data.data_dir={args.data}"] * (args.data is not None)
        given += [f"data.parquet_dir={args.out}"] * (args.out is not None)
        cfg = apply_overrides(get_preset(args.preset), given + args.overrides).data
        splits = [s.strip() for s in args.splits.split(",") if s.strip()]
        scales = [_scale(s) for s in args.scales.split(",") if s.strip()]
        results = precompute_splits(cfg, splits, scales=scales, overwrite=args.overwrite, progress=not args.quiet)
        for split, result in results.items():
            if cfg.skip_invalid:
                print(f"{split}: {result.validation}")
            for r in [result, *result.scaled.values()]:
                _print_result(split, r)
                if args.verify:
                    print(f"{split}: verified {verify(r.out_dir)} rows")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _scale(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--scales: {text.strip()!r} is not an integer size S") from None


def _print_result(split: str, result) -> None:
    s = result_summary(result)
    print(f"{split}: {s['rows']} instances in {s['shards']} shards at {result.out_dir} "
          f"({len(result.written)} written, {len(result.skipped)} already done); "
          f"{s['bytes_per_instance']:.0f} B/instance; "
          + (f"{s['instances_per_second']:.0f} instances/s" if result.written else "nothing to do"))


if __name__ == "__main__":
    sys.exit(main())
