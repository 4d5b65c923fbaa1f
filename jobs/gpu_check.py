"""python -m jobs.gpu_check: every GPU figure in one call (`make gpu-check`), for a GPU lent briefly.

    python -m jobs.gpu_check --out gpu-check/            # on a CUDA machine: ≤ 8 min (the stage limits)
    python -m jobs.gpu_check --device cpu --smoke        # tiny sizes on CPU: the plumbing (the tests run it)

Stages, each a subprocess with its own timeout (and all within --budget seconds); a failed or
timed-out stage is recorded with the end of its log, and the next one runs:
  data        the synthetic dataset (jobs.synth) the runs below train on
  cuda_tests  pytest -m cuda (the CUDA paths of the assigners, model, loader and speed tests)
  train_fp32  jobs.train: a short real Ray Train run, S = 550, ResNet-50, batch 8, fp32 ...
  train_bf16  ... and the same in bf16 autocast (train.amp)
  bench_model jobs.bench_model: forward + post-processing at batch 1 and 8, fp32 and bf16
  bench_train jobs.bench_train: training steps per second of fixed IoU and ATSS w. maIoU (bf16)
It writes OUT/summary.json and OUT/summary.md (images/s in training, fps end to end at batch 1,
peak memory, every failure) and each stage's log; exit code 0 only when every stage passed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from jobs.gpu_check_report import GpuMemorySampler, environment, figures, write_markdown

DEFAULT_BUDGET_S = 480  # the 8 minutes on one H100/H200
# --smoke checks plumbing on shared, loaded CPU machines (CI): generous limits, it takes ≈1 min of CPU.
SMOKE_TIMEOUT_S = 600
SMOKE_BUDGET_S = 3600
LOG_TAIL_LINES = 15
TRAIN_ITERS = 300
# Seconds per stage, adding up to under DEFAULT_BUDGET_S; sized by estimate, not yet run on a GPU.
TIMEOUTS_S = {"data": 30, "cuda_tests": 90, "train_fp32": 120, "train_bf16": 100,
              "bench_model": 60, "bench_train": 70}
STAGES = tuple(TIMEOUTS_S)
FULL = {"scale": 550, "backbone": "resnet50", "batch": 8, "iters": TRAIN_ITERS, "images": 400,
        "val_images": 50, "image_size": 512, "preset": "synthetic", "bench_iters": 20,
        "cuda_tests": ["tests"]}
SMOKE = {"scale": 64, "backbone": "resnet18", "batch": 2, "iters": 2, "images": 8, "val_images": 2,
         "image_size": 64, "preset": "tiny", "bench_iters": 1, "cuda_tests": ["tests/model/test_cuda.py"]}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu-check", help="output directory (default: gpu-check)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="default: cuda")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the plumbing in a minute")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset (default: all: "
                   f"{','.join(STAGES)})")
    p.add_argument("--budget", type=float, default=None, help=f"seconds for all stages together "
                   f"(default: {DEFAULT_BUDGET_S}; {SMOKE_BUDGET_S} with --smoke)")
    p.add_argument("--timeout", action="append", default=[], metavar="STAGE=SECONDS",
                   help="override one stage's timeout, repeatable (default: none)")
    return p


def stage_commands(sizes: dict, device: str, out: Path) -> dict[str, list[str]]:
    """The command line of every stage."""
    py, data = sys.executable, str(out / "synthetic")
    cuda = device == "cuda"
    common = [f"data.scale={sizes['scale']}", f"model.backbone={sizes['backbone']}",
              f"train.batch_size={sizes['batch']}", "model.num_classes=4", f"data.data_dir={data}"]
    if cuda:  # loading and augmenting S = 550 images must keep up with the GPU: most cores load
        cores = os.cpu_count() or 1
        common += [f"data.loader_workers={max(1, cores - 4)}", f"train.cpus_per_worker={max(1, cores - 2)}"]
    train_sets = common + [f"train.use_gpu={str(cuda).lower()}", f"train.storage_path={out / 'runs'}",
                           f"tracking.tracking_uri=sqlite:///{(out / 'mlflow.db').resolve()}",
                           "eval.overlays=0", f"train.checkpoint_every={sizes['iters']}"]
    # one Ray Train worker on a GPU (the real route: Ray, NCCL, the Train controller); in-process on CPU
    workers = "1" if cuda else "0"

    def train(amp: bool) -> list[str]:
        return [py, "-m", "jobs.train", "--preset", sizes["preset"], "--max-iters", str(sizes["iters"]),
                "--num-workers", workers, "--name", f"gpu-check-{'bf16' if amp else 'fp32'}-{int(time.time())}",
                *[a for s in train_sets + [f"train.amp={str(amp).lower()}"] for a in ("--set", s)]]

    smoke_model = ["--runs", "1", "--warmup", "0", "--grids", "atss", "--batches", "1"] \
        if sizes is SMOKE else ["--batches", "1", "8"]
    return {
        "data": [py, "-m", "jobs.synth", "--out", data, "--images", str(sizes["images"]), "--val-images",
                 str(sizes["val_images"]), "--size", str(sizes["image_size"]), "--quiet"],
        "cuda_tests": [py, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                       f"--junitxml={out / 'cuda_tests.xml'}", *sizes["cuda_tests"]],
        "train_fp32": train(False),
        "train_bf16": train(True),
        "bench_model": [py, "-m", "jobs.bench_model", "--devices", device, "--size", str(sizes["scale"]),
                        "--backbone", sizes["backbone"], "--num-classes", "4",
                        "--json", str(out / "bench_model.json"), *smoke_model],
        "bench_train": [py, "-m", "jobs.bench_train", "--device", device, "--preset", sizes["preset"],
                        "--assigners", "fixed_iou", "atss_maiou", "--iters", str(sizes["bench_iters"]),
                        "--warmup", str(min(5, sizes["bench_iters"])), "--json", str(out / "bench_train.json"),
                        *[a for s in common + ["train.amp=true"] for a in ("--set", s)]],
    }


def run_stage(name: str, argv: list[str], timeout_s: float, out: Path) -> dict:
    """Run one stage: its stdout (a job's JSON result) goes to OUT/<name>.out, its stderr (the
    log) to OUT/<name>.log. Never raises."""
    log = out / f"{name}.log"
    start = time.perf_counter()
    with (out / f"{name}.out").open("w") as stdout, log.open("w") as stderr, GpuMemorySampler() as memory:
        try:
            rc = subprocess.run(argv, stdout=stdout, stderr=stderr, timeout=timeout_s).returncode
            status = "ok" if rc == 0 else f"failed (exit code {rc})"
        except subprocess.TimeoutExpired:
            rc, status = None, f"timed out after {timeout_s:g} s"
        except OSError as e:
            rc, status = None, f"could not start: {e}"
    row = {"stage": name, "status": status, "seconds": round(time.perf_counter() - start, 1),
           "peak_gpu_mib": memory.peak_mib, "log": str(log), "command": " ".join(argv)}
    if status != "ok":
        text = "".join((out / f"{name}{ext}").read_text(errors="replace") for ext in (".out", ".log"))
        row["log_tail"] = text.splitlines()[-LOG_TAIL_LINES:]
    print(f"{name:<12} {status:<28} {row['seconds']:7.1f} s", file=sys.stderr, flush=True)
    return row


def _timeouts(overrides: list[str], smoke: bool) -> dict[str, float]:
    timeouts = {name: SMOKE_TIMEOUT_S for name in STAGES} if smoke else dict(TIMEOUTS_S)
    for item in overrides:
        name, _, value = item.partition("=")
        if name not in timeouts or not value:
            raise ValueError(f"--timeout {item!r}: expected STAGE=SECONDS with STAGE one of {list(STAGES)}")
        timeouts[name] = float(value)
    return timeouts


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    try:
        if unknown:
            raise ValueError(f"--stages: unknown {unknown}; valid: {list(STAGES)}")
        timeouts = _timeouts(args.timeout, args.smoke)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment(args.device)
    if args.device == "cuda" and not env["cuda_available"]:
        print(f"error: no CUDA device for torch {env['torch']} (a CPU build? `make gpu-check` installs the "
              "CUDA one); use --device cpu --smoke to check the plumbing", file=sys.stderr)
        return 2
    commands = stage_commands(SMOKE if args.smoke else FULL, args.device, out)
    budget = args.budget or (SMOKE_BUDGET_S if args.smoke else DEFAULT_BUDGET_S)
    start, rows = time.perf_counter(), []
    for name in stages:
        left = budget - (time.perf_counter() - start)
        rows.append(run_stage(name, commands[name], min(timeouts[name], max(1.0, left)), out))
    summary = {"environment": env, "mode": "smoke" if args.smoke else "full",
               "wall_s": round(time.perf_counter() - start, 1), "stages": rows,
               "figures": figures(out, rows, SMOKE if args.smoke else FULL),
               "failures": [r["stage"] for r in rows if r["status"] != "ok"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_markdown(summary, out / "summary.md")
    print((out / "summary.md").read_text())
    return 0 if not summary["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
