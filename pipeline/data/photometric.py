"""mmdetection v2's PhotoMetricDistortion on planar float32 RGB, with the random draws made by the caller.

`pipeline.data.augment` draws the values (brightness, contrast before or after, saturation, hue,
channel permutation) from the sample's own generator and applies them here to the crop window.
"""
from __future__ import annotations

import numpy as np


def photometric(img: np.ndarray, d: dict) -> np.ndarray:
    """mmdetection v2 PhotoMetricDistortion on planar float32 RGB [3, h, w] with drawn values `d`.

    Like the original, values are not clipped to 0..255. Saturation scaling in HSV keeps V and
    H, which in RGB is x -> V + a·(x - V); hue rotation keeps V and the chroma V - min. Planar
    channels keep every step an elementwise operation (reductions over a trailing axis of 3 are
    several times slower in numpy).
    """
    img = img.astype(np.float32, copy=True)
    if "brightness" in d:
        img += np.float32(d["brightness"])
    if d.get("contrast_first") and "contrast" in d:
        img *= np.float32(d["contrast"])
    if "saturation" in d:
        v = np.maximum(np.maximum(img[0], img[1]), img[2])  # [h, w]
        img -= v
        img *= np.float32(d["saturation"])
        img += v
    if "hue" in d:
        img = _rotate_hue(img, float(d["hue"]))
    if not d.get("contrast_first") and "contrast" in d:
        img *= np.float32(d["contrast"])
    if "permutation" in d:
        img = img[d["permutation"]]
    return img


def _rotate_hue(img: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate the HSV hue of planar RGB [3, h, w] by `degrees`, keeping V and the chroma."""
    r, g, b = img
    v = np.maximum(np.maximum(r, g), b)  # [h, w]
    c = v - np.minimum(np.minimum(r, g), b)
    safe = np.where(c > 0, c, np.float32(1))
    # hue in sectors of 60°, in [0, 6); wrapped with `where` (float `%` is slow in numpy)
    red = (g - b) / safe
    hue = np.where(v == r, np.where(red < 0, red + 6, red),
                   np.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = np.where(c > 0, hue, 0) + np.float32(degrees / 60.0)
    hue = np.where(hue >= 6, hue - 6, np.where(hue < 0, hue + 6, hue))
    out = np.empty_like(img)
    for ch, n in enumerate((5, 3, 1)):  # HSV -> RGB: x_n = V - C·clip(min(k, 4 - k), 0, 1), k = (n + H) mod 6
        k = hue + n
        k = np.where(k >= 6, k - 6, k)
        out[ch] = v - c * np.clip(np.minimum(k, 4 - k), 0, 1)
    return out
