"""Device and process-group helpers shared by evaluation and training (no Ray).

- `amp_active` / `autocast`: bf16 autocast is a CUDA-only option; elsewhere `amp` is ignored, so a
  config written for a GPU cluster still runs (in fp32) on a laptop.
- `all_gather`: every rank's Python object on every rank, or just `[obj]` without a process group,
  so the same code runs in one process and under DDP.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist


def amp_active(device: torch.device, amp: bool) -> bool:
    """bf16 autocast is a CUDA-only option: `amp` is ignored on other devices."""
    return amp and device.type == "cuda"


def autocast(device: torch.device, amp: bool):
    """The bf16 autocast context when `amp_active`, else a no-op context."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if amp_active(device, amp) else nullcontext()


def all_gather(obj: Any, world: int) -> list[Any]:
    """[obj of rank 0, …, obj of rank world-1]; just [obj] without a process group."""
    if world == 1 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, obj)
    return parts
