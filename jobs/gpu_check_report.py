"""The parts of jobs.gpu_check that read: the machine, the GPU's memory while a stage runs, the
figures out of each stage's files, and the markdown summary."""
from __future__ import annotations

import json
import platform
import subprocess
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

# The targets on an H100-class GPU: 4× the paper's 13.5 images/s (V100), and real time.
TRAIN_TARGET_IMG_S = 54.0
FPS_TARGET = 100.0
NVIDIA_SMI_MEMORY = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
SAMPLE_PERIOD_S = 0.5


def _nvidia_smi(args: list[str]) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


class GpuMemorySampler:
    """Peak memory used on the GPU(s), per nvidia-smi, while the `with` block runs (None without one).

    Sampled from outside: it counts every process of a stage (Ray workers included), not only
    what torch's allocator holds."""

    def __init__(self):
        self.peak_mib: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            text = _nvidia_smi(NVIDIA_SMI_MEMORY)
            if text is None:
                return
            used = sum(int(v) for v in text.split())
            self.peak_mib = max(self.peak_mib or 0, used)
            self._stop.wait(SAMPLE_PERIOD_S)

    def __enter__(self) -> GpuMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def environment(device: str) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name(0) if device == "cuda" and cuda else platform.processor()
            or platform.machine(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": cuda, "gpus": _nvidia_smi(["nvidia-smi", "-L"]),
            "python": platform.python_version(), "platform": platform.platform()}


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tests(path: Path) -> dict | None:
    try:
        suite = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def _training(result: dict | None, batch: int) -> dict | None:
    if not result or "metrics" not in result:
        return None
    m = result["metrics"]
    return {"iterations": m.get("iteration"), "train_s": round(m["train_time"], 1),
            "images_per_s": round(m["iteration"] * batch / m["train_time"], 1),
            "eval_fps_batch1": round(m["fps"], 1), "fps_setup": m.get("fps_setup"),
            "segm_AP": m.get("segm/AP")}


def figures(out: Path, rows: list[dict], sizes: dict) -> dict:
    """What the stages measured, from the files they wrote (None where a stage did not)."""
    ran = {r["stage"] for r in rows}
    return {
        "cuda_tests": _tests(out / "cuda_tests.xml") if "cuda_tests" in ran else None,
        **{f"train_{p}": _training(_json(out / f"train_{p}.out"), sizes["batch"]) if f"train_{p}" in ran
           else None for p in ("fp32", "bf16")},
        "bench_model": _json(out / "bench_model.json") if "bench_model" in ran else None,
        "bench_train": _json(out / "bench_train.json") if "bench_train" in ran else None,
    }


def _lines(summary: dict) -> list[str]:
    f, env = summary["figures"], summary["environment"]
    lines = [f"# gpu-check ({summary['mode']}) on {env['device']}", "",
             f"torch {env['torch']} (CUDA {env['torch_cuda']}), Python {env['python']}; "
             f"{summary['wall_s']:.0f} s in all", "",
             "| stage | status | seconds | peak GPU MiB |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['status']} | {r['seconds']:.0f} | {r['peak_gpu_mib'] or '–'} |"
              for r in summary["stages"]]
    if f["cuda_tests"]:
        lines += ["", "CUDA tests: " + ", ".join(f"{v} {k}" for k, v in f["cuda_tests"].items())]
    for p in ("fp32", "bf16"):
        t = f[f"train_{p}"]
        if t:
            lines.append(f"\ntraining {p}: {t['images_per_s']} images/s over {t['iterations']} iterations "
                         f"(target ≥ {TRAIN_TARGET_IMG_S:.0f} on an H100); evaluation fps at batch 1: "
                         f"{t['eval_fps_batch1']} ({t['fps_setup']})")
    for r in f["bench_model"] or []:
        lines.append(f"\nbench_model {r['grid']} batch {r['batch']} {r['precision']}: {r['images_per_s']} "
                     f"images/s end to end ({r['total_ms']} ms), peak {r['peak_memory_mib']} MiB"
                     + (f" (target ≥ {FPS_TARGET:.0f} fps at batch 1)" if r["batch"] == 1 else ""))
    for r in f["bench_train"] or []:
        lines.append(f"\nbench_train {r['assigner']} {r['precision']}: {r['img_per_s']:.1f} images/s "
                     f"(step {r['step_ms']:.0f} ms, loading {r['load_ms']:.0f} ms), peak {r['peak_memory_mib']} MiB")
    for r in summary["stages"]:
        if r["status"] != "ok":
            lines += ["", f"## {r['stage']}: {r['status']}", "```", *r.get("log_tail", []), "```"]
    return lines


def write_markdown(summary: dict, path: Path) -> None:
    path.write_text("\n".join(_lines(summary)) + "\n")
