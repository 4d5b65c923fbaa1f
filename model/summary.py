"""Parameter count per component of a `Yolact` (what the benchmark and jobs print)."""
from __future__ import annotations

from torch import nn

COMPONENTS = ("backbone", "fpn", "protonet", "head", "semantic_head", "mask_iou_net")
TRAIN_ONLY = ("semantic_head",)


def parameter_summary(model: nn.Module) -> dict[str, int]:
    """Trainable-or-not parameter counts: each component, `total`, and `inference` (without train-only parts)."""
    counts = {}
    for name in COMPONENTS:
        module = getattr(model, name, None)
        if module is not None:
            counts[name] = sum(p.numel() for p in module.parameters())
    counts["total"] = sum(p.numel() for p in model.parameters())
    counts["inference"] = counts["total"] - sum(counts.get(n, 0) for n in TRAIN_ONLY)
    return counts


def format_parameter_summary(model: nn.Module) -> str:
    counts = parameter_summary(model)
    width = max(len(k) for k in counts)
    lines = [f"{name:<{width}}  {n:>12,}" for name, n in counts.items()]
    return "\n".join(lines)
