"""Write the built-in synthetic shapes dataset as a COCO-format dataset.

    python -m jobs.synth --out DIR --images N --size S --seed K

Writes DIR/annotations/{train,val}.json and DIR/images/{train,val}/*.png, then prints the
mask-over-box (MOB) histogram per category. Deterministic for a seed, whatever --workers is.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from pipeline.data.scenes import CATEGORIES
from pipeline.data.synthetic import format_mob_table, generate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.synth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (created; existing files are overwritten)")
    p.add_argument("--images", type=int, default=200, help="training images (default: 200)")
    p.add_argument("--val-images", type=int, default=None,
                   help="validation images (default: a quarter of --images, at least 1)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels, square images (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: every CPU core); the output does not depend on it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    val = args.val_images if args.val_images is not None else max(1, args.images // 4)
    start = time.perf_counter()
    try:
        meta = generate(args.out, args.images, val, args.size, args.seed, workers=args.workers,
                        progress=not args.quiet)
    except (ValueError, OSError) as e:  # bad parameters; an --out that cannot be written
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(f"wrote {args.images} train + {val} val images ({meta['train_instances']} + "
          f"{meta['val_instances']} instances, categories {', '.join(CATEGORIES)}) to "
          f"{os.path.abspath(args.out)} in {seconds:.1f} s")
    print("\nmask-over-box (MOB) histogram, train split (S/M/L = COCO small/medium/large):")
    print(format_mob_table(meta["train_mob"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
