"""python -m jobs.train: train, evaluate and track one (scale, assigner, seed) cell on Ray Train.

Examples:
  python -m jobs.train                                   # tiny preset on the synthetic data
  python -m jobs.train --data /data/voc --scale 320 --assigner atss_maiou --num-workers 2
  python -m jobs.train --preset synthetic --set train.lr=0.002 --set model.backbone=resnet50
  python -m jobs.train --config my.yaml --print-config   # preset → my.yaml → flags, as YAML
Exit code 0 on success; the MLflow run id, final metrics and checkpoint path are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pipeline.config import ASSIGNER_NAMES, Config
from pipeline.config_files import add_config_arguments, config_yaml, resolve_config
from pipeline.presets import PRESETS, get_preset

DEFAULT_PRESET = "tiny"
# The flags a user types daily, each a shorthand for one `--set` (applied before the --set list).
SHORTHANDS = {"data": "data.data_dir", "scale": "data.scale", "assigner": "train.assigner",
              "seed": "train.seed", "max_iters": "train.max_iters", "num_workers": "train.num_workers"}


def build_parser() -> argparse.ArgumentParser:
    d = get_preset(DEFAULT_PRESET)
    p = argparse.ArgumentParser(
        prog="python -m jobs.train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every other setting is a --set SECTION.FIELD=VALUE (e.g. train.batch_size=16, "
               "train.cpus_per_worker=2, train.use_gpu=true, train.init_from=PATH, "
               "model.backbone_weights=PATH, train.storage_path=DIR, tracking.tracking_uri=URI); "
               "pipeline/config.py lists them all. Options left out take the preset's value; the "
               f"defaults shown are the '{DEFAULT_PRESET}' preset's, sized for a 2-core CPU machine. "
               "Its 1 CPU per worker lets the tiny sweep run two cells side by side; a single run on "
               "that machine trains ≈1.7× faster with --set train.cpus_per_worker=2 (docs/benchmarks.md).")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                   help=f"base configuration (default: {DEFAULT_PRESET})")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="COCO-format dataset directory (annotations/train.json, annotations/val.json, "
                        "images/); default: the built-in synthetic dataset, generated under "
                        f"{d.data.synthetic_dir} on first use")
    p.add_argument("--scale", type=int, default=None,
                   help=f"network input size S (S×S) (default: {d.data.scale})")
    p.add_argument("--assigner", choices=ASSIGNER_NAMES, default=None,
                   help=f"anchor assigner (default: {d.train.assigner})")
    p.add_argument("--seed", type=int, default=None, help=f"random seed (default: {d.train.seed})")
    p.add_argument("--max-iters", type=int, default=None,
                   help=f"training iterations; overrides epochs (default: {d.train.max_iters})")
    p.add_argument("--num-workers", type=int, default=None,
                   help=f"Ray Train workers; 0 runs in-process without fault tolerance "
                        f"(default: {d.train.num_workers})")
    p.add_argument("--name", default=None,
                   help="run name (Ray and MLflow); re-using a name resumes that Ray run, or returns it "
                        "when it finished (default: <assigner>-s<scale>-seed<seed>-<config hash>-<time> "
                        "for Ray, 's<scale> · <assigner> · seed <seed>' in MLflow)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, repeatable, applied last "
                        "(e.g. --set train.lr=0.002) (default: none)")
    add_config_arguments(p, "the preset")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    given = [f"{key}={getattr(args, flag)}" for flag, key in SHORTHANDS.items()
             if getattr(args, flag) is not None]
    return resolve_config(get_preset(args.preset), args.config, given + args.overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    from pipeline.data.datasets import check_paths

    try:
        if not os.environ.get("RAY_ADDRESS"):  # on a cluster only the workers may see the data
            check_paths(cfg.data)  # before any MLflow run or Ray worker exists
        from pipeline.train.run import default_run_name, run_training  # Ray and MLflow: after the checks

        name = args.name or f"{default_run_name(cfg)}-{time.strftime('%Y%m%d-%H%M%S')}"
        result = run_training(cfg, run_name=name, display_name=args.name)
    except ValueError as e:  # bad config or data, found before any run or worker started
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
