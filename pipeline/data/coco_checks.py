"""Validation of COCO records: one function per record type, each returning (kind, message)
for the first problem found, or (None, ""); `Problems` collects them and raises them together.
The kinds (`KIND_*`) are what `ValidationReport.dropped` counts.
"""
from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

# COCO's boxes come from float polygons and may overshoot the border by a fraction of a pixel.
BOX_TOLERANCE = 1.0
MIN_POLYGON_POINTS = 3
# How many problems an error message lists before summarising the rest.
MAX_LISTED_PROBLEMS = 5

KIND_BAD_RECORD = "bad_record"  # a required field is missing or has the wrong type
KIND_DUPLICATE_IMAGE_ID = "duplicate_image_id"
KIND_MISSING_FILE = "missing_file"
KIND_UNREADABLE_IMAGE = "unreadable_image"  # not an image, or truncated (verify_images)
KIND_IMAGE_SIZE = "image_size"  # the file's size disagrees with the JSON's height/width
KIND_DUPLICATE_ANNOTATION_ID = "duplicate_annotation_id"
KIND_UNKNOWN_IMAGE = "unknown_image"
KIND_UNKNOWN_CATEGORY = "unknown_category"
KIND_NAN_COORDS = "nan_coords"
KIND_BOX_SIZE = "box_size"  # non-positive width or height
KIND_BOX_OUTSIDE = "box_outside"
KIND_POLYGON = "polygon"  # fewer than 3 points, or an odd number of coordinates
KIND_MASK_SIZE = "mask_size"  # RLE size disagrees with the image
KIND_BAD_SEGMENTATION = "bad_segmentation"  # RLE counts that pycocotools cannot read
# Not errors, counted apart: annotations of a background category are simply not objects, and
# annotations of a dropped image go with it.
KIND_BACKGROUND_ANNOTATION = "background_annotation"


class Problems:
    """Collects (kind, message) pairs; raises them together unless skipping."""

    def __init__(self, json_path: str):
        self.json_path = json_path
        self.items: list[tuple[str, str]] = []

    def add(self, kind: str, message: str) -> None:
        self.items.append((kind, f"{self.json_path}: {message}"))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        listed = "\n  ".join(m for _, m in self.items[:MAX_LISTED_PROBLEMS])
        more = len(self.items) - MAX_LISTED_PROBLEMS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise ValueError(f"invalid COCO dataset ({len(self.items)} problems; --skip-invalid or "
                         f"--set data.skip_invalid=true drops such records):\n  {listed}{tail}")


def check_image_file(path: str, im: dict, verify: bool) -> tuple[str | None, str]:
    if not os.path.exists(path):
        return KIND_MISSING_FILE, f"file not found at {path}"
    try:
        with Image.open(path) as f:
            size = f.size
            if verify:
                f.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return KIND_UNREADABLE_IMAGE, f"cannot decode {path} ({e})"
    if size != (im["width"], im["height"]):
        return KIND_IMAGE_SIZE, (f"file is {size[0]}x{size[1]} (w x h) but the JSON says "
                                 f"{im['width']}x{im['height']}")
    return None, ""


def check_annotation(a: dict, h: int, w: int) -> tuple[str | None, str]:
    seg = a["segmentation"]
    if isinstance(seg, list):
        if not seg:
            return KIND_POLYGON, "empty polygon list"
        for i, poly in enumerate(seg):
            if not isinstance(poly, list) or not all(isinstance(v, (int, float)) for v in poly):
                return KIND_BAD_SEGMENTATION, f"polygon {i} is not a list of numbers"
            if not np.isfinite(np.asarray(poly, dtype=np.float64)).all():
                return KIND_NAN_COORDS, f"polygon {i} has NaN or infinite coordinates"
            if len(poly) % 2 or len(poly) < 2 * MIN_POLYGON_POINTS:
                return KIND_POLYGON, (f"polygon {i} has {len(poly)} coordinates ({len(poly) // 2} points); "
                                      f"a polygon needs at least {MIN_POLYGON_POINTS} points (x, y pairs)")
    else:
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2) or not isinstance(counts, (str, list)):
            return KIND_BAD_SEGMENTATION, "RLE needs 'size' [h, w] and 'counts'"
        if list(size) != [h, w]:
            return KIND_MASK_SIZE, f"mask size {size[0]}x{size[1]} (h x w) disagrees with the image {h}x{w}"
        if isinstance(counts, list) and sum(counts) != h * w:
            return KIND_BAD_SEGMENTATION, f"uncompressed RLE counts sum to {sum(counts)}, not h*w = {h * w}"
    if "bbox" in a:
        box = a["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            return KIND_BAD_RECORD, f"bbox {box!r} is not [x, y, w, h]"
        if not all(math.isfinite(v) for v in box):
            return KIND_NAN_COORDS, f"bbox {box} has NaN or infinite coordinates"
        x, y, bw, bh = box
        if bw <= 0 or bh <= 0:
            return KIND_BOX_SIZE, f"bbox {box} has non-positive width or height"
        if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + bw > w + BOX_TOLERANCE or y + bh > h + BOX_TOLERANCE:
            return KIND_BOX_OUTSIDE, f"bbox {box} (x, y, w, h) lies outside the {w}x{h} image"
    return None, ""


def short(obj) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."
