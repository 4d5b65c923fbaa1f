"""python -m jobs.export: export a checkpoint's network to ONNX and check it with ONNX Runtime.

The file holds the network up to its raw outputs (cls, box, coef, proto; dynamic batch, fixed
S×S input) and, as metadata, what predicting needs besides: scale, classes, anchor grid,
post-processing parameters. The post-processing stays in torch and is shared with the PyTorch
route (pipeline/eval/export.py says why). After writing, ONNX Runtime and PyTorch run the same
images: the raw outputs must agree within 1e-4 and the detections must be the same; the result
is printed as JSON and a failed check exits with 1.

Examples:
  python -m jobs.export --checkpoint ~/.cache/maskaware/runs/<run>/iter_0000600 --out model.onnx
  python -m jobs.export --checkpoint <mlflow run id> --out model-320.onnx --scale 320
  python -m jobs.predict --onnx model.onnx --input photos/ --out pred/
"""
from __future__ import annotations

import argparse
import json
import sys

FORMATS = ("onnx",)
CHECK_IMAGES = 2  # images of the ORT-vs-PyTorch check


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="PATH|RUN_ID",
                   help="checkpoint directory, a model.pt (also MLflow's checkpoint/model.pt), or an "
                        "MLflow run id (required)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default: onnx)")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (required)")
    p.add_argument("--scale", type=int, default=None,
                   help="input size S of the exported network (default: the one it was trained at)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI for a run id (default: MLFLOW_TRACKING_URI, else the local store)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.eval.export import run_export  # heavy imports after --help

    try:
        report = run_export(args.checkpoint, args.out, scale=args.scale, tracking_uri=args.tracking_uri,
                            check_images=CHECK_IMAGES)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    if not report["check"]["ok"]:
        print("error: ONNX Runtime and PyTorch disagree (see check above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
