"""Device and process-group helpers shared by evaluation and training (no Ray).

- `amp_active` / `autocast`: bf16 autocast is a CUDA-only option for training; elsewhere `amp` is
  ignored, so a config written for a GPU cluster still runs (in fp32) on a laptop.
- `inference_precision` / `inference_autocast` / `channels_last`: how inference runs — bf16
  autocast with `amp` on CUDA or with `eval.precision="bf16"` on any device with native bf16 (CUDA,
  or a CPU with AVX-512 BF16 / AMX, where oneDNN has bf16 kernels; emulated bf16 would be slower
  than fp32), and the model in channels_last memory format for the duration of a block;
  `inference_model`: the bf16 route's model (batch norm folded, conv weights cast once).
- `cpu_threads`: a fixed torch thread count for a block (CPU results depend on it).
- `broadcast_state`, `all_gather`: rank 0's model state on every rank, and every rank's Python
  object on every rank; without a process group they do nothing (or return `[obj]`), so the same
  code runs in one process and under DDP.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from model.fold import cast_conv_weights, fold_batchnorm


def amp_active(device: torch.device, amp: bool) -> bool:
    """bf16 autocast is a CUDA-only option: `amp` is ignored on other devices."""
    return amp and device.type == "cuda"


def autocast(device: torch.device, amp: bool):
    """The bf16 autocast context when `amp_active`, else a no-op context."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if amp_active(device, amp) else nullcontext()


FP32, BF16_AUTOCAST = "fp32", "bf16-autocast"
PRECISIONS = ("fp32", "bf16")  # the values of `EvalConfig.precision`


def bf16_native(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (CUDA with bf16, a CPU with AVX-512 BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def inference_precision(device: torch.device, amp: bool, precision: str) -> str:
    """FP32 or BF16_AUTOCAST: what the forward pass at evaluation runs in on `device`."""
    if precision not in PRECISIONS:
        raise ValueError(f"eval.precision must be one of {PRECISIONS}, got {precision!r}")
    bf16 = amp_active(device, amp) or (precision == "bf16" and bf16_native(device))
    return BF16_AUTOCAST if bf16 else FP32


def inference_autocast(device: torch.device, precision_name: str):
    """bf16 autocast for BF16_AUTOCAST (from `inference_precision`), else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision_name == BF16_AUTOCAST else nullcontext()


@contextmanager
def channels_last(module: nn.Module, enabled: bool):
    """Run the block with `module`'s 4-d weights in channels_last, then back to contiguous (a
    layout change only: the values, and training afterwards, are unchanged)."""
    if not enabled:
        yield
        return
    module.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        module.to(memory_format=torch.contiguous_format)


@contextmanager
def cpu_threads(device: torch.device, threads: int):
    """Run the block with `threads` torch CPU threads (on a CPU device), then restore the count.

    CPU convolutions sum in an order that depends on the thread count: the same weights give
    outputs that differ in the last bits with 1 and with 2 threads, and a detection near a
    threshold can flip. Evaluating with the training worker's count everywhere makes the numbers
    reproducible.
    """
    if device.type != "cpu" or threads < 1 or threads == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def broadcast_state(module: nn.Module, world: int) -> None:
    """Give every rank rank 0's parameters and buffers (in place); nothing without a process group."""
    if world == 1 or not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():  # views of the module's own tensors
            dist.broadcast(tensor, src=0)


def all_gather(obj: Any, world: int) -> list[Any]:
    """[obj of rank 0, …, obj of rank world-1]; just [obj] without a process group."""
    if world == 1 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, obj)
    return parts


def inference_model(module: nn.Module, precision_name: str) -> nn.Module:
    """The model as inference runs it in `precision_name` (from `inference_precision`): for
    BF16_AUTOCAST a copy with batch norm folded into the convolutions and their weights stored in
    bf16 once (`model.fold`; `module` is left as it is), else `module` itself (fp32: the exact
    reference)."""
    if precision_name != BF16_AUTOCAST:
        return module
    return cast_conv_weights(fold_batchnorm(module), torch.bfloat16)
