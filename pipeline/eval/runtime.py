"""Device and process-group helpers shared by evaluation and training (no Ray).

- `amp_active` / `autocast`: bf16 autocast is a CUDA-only option; elsewhere `amp` is ignored, so a
  config written for a GPU cluster still runs (in fp32) on a laptop.
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


def amp_active(device: torch.device, amp: bool) -> bool:
    """bf16 autocast is a CUDA-only option: `amp` is ignored on other devices."""
    return amp and device.type == "cuda"


def autocast(device: torch.device, amp: bool):
    """The bf16 autocast context when `amp_active`, else a no-op context."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if amp_active(device, amp) else nullcontext()


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
