"""Inference speed (fps) of any callable: batch 1, warm, synchronised, median of many runs.

`measure_fps(fn, inputs, ...)` times `fn(x)` for inputs taken round-robin from `inputs` (each one
image at batch 1). `fn` is the whole inference path — model forward + post-processing — so this
module needs nothing from `model/`. On CUDA the device is synchronised before the clock starts
and before it stops, so queued kernels are counted; `runs` timed calls follow `warmup` untimed
ones (cuDNN autotuning, allocator growth, lazy init). The median resists the outliers of a
shared machine. The result names the device and the numeric precision, which the caller states
(e.g. "fp32", "bf16-autocast"): a callable cannot tell.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

MS_PER_S = 1000.0


def describe_device(device: torch.device | str) -> str:
    """A human-readable device name, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu (2 threads)'."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def describe_setup(device: torch.device | str, precision: str, timed: str, batch: int = 1) -> str:
    """What an fps figure measured, e.g. 'cpu (2 threads), bf16-autocast, batch 1, model +
    post-processing': every cell of a report states it (`fps_setup`)."""
    return f"{describe_device(device)}, {precision}, batch {batch}, {timed}"


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def measure_fps(fn: Callable[[Any], Any], inputs: Sequence[Any], *, warmup: int = 10, runs: int = 50,
                device: torch.device | str = "cpu", precision: str = "fp32") -> dict[str, Any]:
    """Time `fn` at batch 1 and return fps (from the median), latency statistics, device, precision.

    Calls run under `torch.inference_mode()`; `inputs` should already be on `device` (moving
    data is not part of the model's speed).
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}")
    if len(inputs) == 0:
        raise ValueError("inputs is empty: give at least one input to time")
    if warmup < 0 or runs < 1:
        raise ValueError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    device = torch.device(device)
    sync = _synchronizer(device)
    times_ms = []
    with torch.inference_mode():
        for i in range(warmup):
            fn(inputs[i % len(inputs)])
        sync()
        for i in range(runs):
            x = inputs[(warmup + i) % len(inputs)]
            start = time.perf_counter()
            fn(x)
            sync()
            times_ms.append((time.perf_counter() - start) * MS_PER_S)
    median = statistics.median(times_ms)
    return {
        "fps": MS_PER_S / median if median > 0 else float("inf"),
        "ms_median": median,
        "ms_min": min(times_ms),
        "ms_max": max(times_ms),
        "runs": runs,
        "warmup": warmup,
        "batch_size": 1,
        "device": describe_device(device),
        "precision": precision,
    }
