"""Weight initialisation shared by the FPN, the heads and the re-scoring net (mmdetection's
`xavier_init(distribution="uniform")` for the layers YOLACT adds on top of the backbone)."""
from __future__ import annotations

from torch import nn


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Conv2d inside `module`."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
