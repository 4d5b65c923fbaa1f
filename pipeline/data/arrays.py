"""Tensors to numpy for the code that hands arrays to numpy-only libraries (pycocotools, PIL).

`to_numpy(x)`: a torch tensor on any device (detached, moved to the CPU; bfloat16 and float16
widened to float32, which numpy lacks or computes slowly) or anything `np.asarray` takes.
"""
from __future__ import annotations

import numpy as np

MIN_FLOAT_BYTES = 4  # float32: narrower floats (bf16 / fp16 from autocast) are widened


def to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < MIN_FLOAT_BYTES:
            x = x.float()
    return np.asarray(x)
