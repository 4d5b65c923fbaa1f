"""python -m jobs.predict: detect and segment on your own images or video with a trained model.

--input is an image, a folder of images, a glob ("photos/*.jpg", quoted) or a video file. Writes,
under --out: overlays/<name>.png (or <video>_overlay.mp4) with masks, boxes, class names and
scores; coco_results.json (COCO results: the training dataset's category ids, RLE masks);
bbox_results.json and segm_results.json (the two files of a COCO test-dev submission);
images.json (image id -> file). Prints a summary as JSON (images, detections, fps).
Files that cannot be read are reported and skipped; the others are still processed.

Examples:
  python -m jobs.predict --checkpoint ~/.cache/maskaware/runs/<run>/iter_0000600 --input photos/ --out pred/
  python -m jobs.predict --checkpoint <mlflow run id> --input clip.mp4 --out pred/ --device cuda
  python -m jobs.predict --onnx model.onnx --input "photos/*.jpg" --out pred/
"""
from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    from pipeline.eval.predict import BATCH_SIZE, DRAW_THR

    p = argparse.ArgumentParser(prog="python -m jobs.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", metavar="PATH|RUN_ID",
                       help="checkpoint directory, a model.pt (also as MLflow logged it: "
                            "checkpoint/model.pt), or an MLflow run id")
    model.add_argument("--onnx", metavar="FILE", help="a model exported by python -m jobs.export")
    p.add_argument("--input", required=True, metavar="PATH",
                   help="image, folder of images, glob pattern or video file (required)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (required)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"images per batch (default: {BATCH_SIZE})")
    p.add_argument("--draw-thr", type=float, default=DRAW_THR,
                   help=f"draw detections scoring at least this; the results keep all (default: {DRAW_THR})")
    p.add_argument("--scale", type=int, default=None,
                   help="network input size S (checkpoint only; default: the one it was trained at)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default=None,
                   help="forward pass (checkpoint only): bf16 autocast where the device has it, or fp32 "
                        "(default: the checkpoint's eval.precision, as evaluation; an ONNX model runs fp32)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI for a run id (default: MLFLOW_TRACKING_URI, else the local store)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.onnx and args.scale:
        print("error: --scale is fixed when exporting (python -m jobs.export --scale)", file=sys.stderr)
        return 2
    if args.onnx and args.precision:
        print("error: --precision is for a checkpoint; an ONNX model runs as exported (fp32)", file=sys.stderr)
        return 2
    from pipeline.eval.predict import run_predict

    try:
        summary = run_predict(args.input, args.out, checkpoint=args.checkpoint, onnx=args.onnx,
                              device=args.device, scale=args.scale, tracking_uri=args.tracking_uri,
                              batch_size=args.batch_size, draw_thr=args.draw_thr, precision=args.precision)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{summary['images']} images, {summary['detections']} detections, {summary['fps']:.2f} images/s "
          f"({summary['device']}); {len(summary['problems'])} skipped", file=sys.stderr)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
