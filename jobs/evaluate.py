"""python -m jobs.evaluate: evaluate a checkpoint of ours on a validation set, write overlays.

The model is rebuilt from the checkpoint's own config.json (written next to model.pt by every
training run), so only the path is needed; --data points it at another COCO-format dataset
(same classes). Prints the metrics as JSON and writes, under --out: metrics.json,
coco_results.json and overlays/<image_id>.png.

Example:
  python -m jobs.evaluate --checkpoint ~/.cache/maskaware/runs/<run>/iter_0000150 --out eval/
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.config_files import add_config_arguments, config_yaml


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="checkpoint directory (holding model.pt and config.json), a model.pt "
                        "with config.json beside it, or a run's MLflow artifacts as downloaded "
                        "(checkpoint/model.pt with config/config.json next to checkpoint/) (required)")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="COCO-format dataset directory to evaluate on (default: the dataset the "
                        "checkpoint was trained with, e.g. the built-in synthetic one)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output directory (default: <checkpoint dir>/evaluation)")
    p.add_argument("--overlays", type=int, default=None,
                   help="number of overlay PNGs (default: the checkpoint config's eval.overlays)")
    p.add_argument("--device", default="cpu",
                   help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.FIELD=VALUE",
                   help="override a field of the checkpoint's config, repeatable "
                        "(e.g. --set eval.score_thr=0.1) (default: none)")
    add_config_arguments(p, "the checkpoint's config")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.eval.evaluate import evaluate_checkpoint
    from pipeline.eval.model_files import checkpoint_config  # heavy imports after --help

    ckpt = Path(args.checkpoint).expanduser()
    out = Path(args.out) if args.out else (ckpt if ckpt.is_dir() else ckpt.parent) / "evaluation"
    overrides = list(args.overrides)
    if args.overlays is not None:
        overrides.append(f"eval.overlays={args.overlays}")
    try:
        if args.print_config:
            print(config_yaml(checkpoint_config(ckpt, data_dir=args.data, config_file=args.config,
                                                overrides=overrides)), end="")
            return 0
        metrics = evaluate_checkpoint(ckpt, out_dir=out, data_dir=args.data, overrides=overrides,
                                      device=args.device, config_file=args.config,
                                      progress=sys.stderr.isatty())
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
