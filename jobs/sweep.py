"""Run a sweep: the scale × assigner (× seed × model option) grid on Ray Tune, tracked in MLflow.

    python -m jobs.sweep --preset tiny
    python -m jobs.sweep --preset paper --set train.storage_path=s3://bucket/runs
    python -m jobs.sweep --config my-sweep.yaml --dry-run
    python -m jobs.sweep --resume --name tiny-20261121-113205
    ray job submit --working-dir . -- python -m jobs.sweep --preset tiny

Standalone it starts a local Ray; under `ray job submit` (RAY_ADDRESS set) it joins the cluster.
It ends by printing the report table, where the report and the MLflow data are, and how to open
the MLflow UI. Exit code: 0 when every cell finished, 1 when a trial failed (its error is
printed), 130 when the sweep was interrupted (continue it with --resume), 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import os
import sys

from pipeline.config_files import add_config_arguments, config_yaml, resolve_config
from pipeline.presets import PRESETS, get_preset

DEFAULT_PRESET = "tiny"
WHERE = "sweep.root"  # the one override --resume accepts: where to look for the sweep


def _rows_help() -> str:
    """The model-option rows (sweep.variants) and the assigner each one fixes, if any."""
    from pipeline.config import Config, apply_overrides
    from pipeline.presets import VARIANTS

    parts = []
    for name, v in VARIANTS.items():
        fixed = apply_overrides(Config(), list(v.overrides)).train.assigner
        sets = any(o.startswith("train.assigner=") for o in v.overrides)
        parts.append(f"{name} ({v.label}{'; fixes assigner ' + fixed if sets else ''})")
    return ("Model-option rows for --set sweep.variants=…: " + ", ".join(parts) + ". A row that fixes "
            "its assigner does not cross with sweep.assigners (--dry-run says so); every other row gives one "
            "cell per assigner, and the report compares the assigners within each row.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_rows_help())
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                   help="the grid and training settings to start from (default: %(default)s; "
                        "tiny = 2 scales × 2 assigners on built-in synthetic data, ~11 min on 2 CPU cores; "
                        "cpu-ablation = 3 assigners × 6 seeds, ≤ 60 min)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one config field, repeatable (e.g. --set sweep.seeds=0,1,2 "
                        "--set train.max_iters=300); with --resume only sweep.root")
    p.add_argument("--name", default=None,
                   help="sweep name: its directory under sweep.root and its MLflow tag "
                        "(default: <preset>-<date>-<time>; with --resume: the latest sweep of the preset)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the grid (one line per cell: scale, assigner, row, seed) and its size, "
                        "then exit without starting Ray (default: off)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep: finished cells are neither retrained nor "
                        "logged again; the saved config of the sweep is used (default: off)")
    add_config_arguments(p, "the preset")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        changed = [o for o in args.overrides if not o.startswith(f"{WHERE}=")]
        if args.resume and (changed or args.config):
            given = f"--set {changed[0]}" if changed else f"--config {args.config}"
            raise ValueError(f"{given}: a resumed sweep continues with its saved config "
                             f"(only --set {WHERE}=... may be given, to find it)")
        cfg = resolve_config(get_preset(args.preset), args.config, args.overrides)
        if args.print_config:
            print(config_yaml(cfg), end="")
            return 0
        if args.dry_run:
            from pipeline.sweep.grid import describe_grid

            print(describe_grid(cfg))
            return 0
        if not args.resume and not os.environ.get("RAY_ADDRESS"):  # on a cluster only workers see it
            from pipeline.data.datasets import check_paths

            check_paths(cfg.data)  # before Ray, MLflow and the report code are even imported
        from pipeline.report.build import finish_sweep  # Ray only after the arguments are good
        from pipeline.sweep.driver import run_sweep

        outcome = run_sweep(cfg, args.preset, name=args.name, resume=args.resume)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finish_sweep(outcome)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
