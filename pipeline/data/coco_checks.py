"""Validation of COCO records: one function per record type, each returning (kind, message)
for the first problem found, or (None, ""); `Problems` collects them and raises them together.
The kinds (`KIND_*`) are what `ValidationReport.dropped` counts. `valid_categories`,
`valid_images` and `valid_annotations` run those checks over a whole annotation file's lists.
"""
from __future__ import annotations

import math
import os
from collections import Counter

import numpy as np
from PIL import Image, UnidentifiedImageError

# COCO's boxes come from float polygons and may overshoot the border by a fraction of a pixel.
BOX_TOLERANCE = 1.0
MIN_POLYGON_POINTS = 3
BACKGROUND_CATEGORY_NAMES = frozenset({"_background_", "__background__", "background", "__ignore__"})
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


def valid_categories(raw: list, json_path: str) -> tuple[dict[int, dict], set[int]]:
    """Categories by id and the ids of background categories (their annotations are ignored)."""
    categories, background, seen = {}, set(), set()
    for c in raw:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or "name" not in c:
            raise ValueError(f"{json_path}: category {c!r} needs an integer 'id' and a 'name'")
        if c["id"] in seen:
            raise ValueError(f"{json_path}: duplicate category id={c['id']}")
        seen.add(c["id"])
        if str(c["name"]).strip().lower() in BACKGROUND_CATEGORY_NAMES:
            background.add(c["id"])
        else:
            categories[c["id"]] = c
    return categories, background


def valid_images(raw: list, image_root: str, verify: bool,
                 problems: Problems) -> tuple[dict[int, dict], set]:
    """Valid images by id, and the ids of the dropped ones (their annotations go with them)."""
    counts = Counter(im.get("id") for im in raw if isinstance(im, dict))
    images: dict[int, dict] = {}
    dropped = set()
    for im in raw:
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) \
                or not isinstance(im.get("file_name"), str) \
                or not all(isinstance(im.get(k), int) and im[k] > 0 for k in ("height", "width")):
            problems.add(KIND_BAD_RECORD, f"image {short(im)}: needs integer 'id', 'file_name' and "
                                          "positive integer 'height' and 'width'")
            continue
        where = f"image id={im['id']} file {im['file_name']}"
        if counts[im["id"]] > 1:
            problems.add(KIND_DUPLICATE_IMAGE_ID, f"{where}: image id {im['id']} appears {counts[im['id']]} times")
            dropped.add(im["id"])
            continue
        kind, message = check_image_file(os.path.join(image_root, im["file_name"]), im, verify)
        if kind is not None:
            problems.add(kind, f"{where}: {message}")
            dropped.add(im["id"])
            continue
        images[im["id"]] = im
    return images, dropped


def valid_annotations(raw: list, images: dict[int, dict], dropped_images: set, categories: dict[int, dict],
                      background_ids: set[int], problems: Problems) -> tuple[list[dict], int, int]:
    """Valid annotations, and how many went with a dropped image or were of a background class."""
    counts = Counter(a.get("id") for a in raw if isinstance(a, dict))
    anns = []
    with_images = background = 0
    for a in raw:
        if not isinstance(a, dict) or not isinstance(a.get("id"), int) \
                or not isinstance(a.get("image_id"), int) or not isinstance(a.get("category_id"), int) \
                or not isinstance(a.get("segmentation"), (list, dict)):
            problems.add(KIND_BAD_RECORD, f"annotation {short(a)}: needs integer 'id', 'image_id', "
                                          "'category_id' and a 'segmentation'")
            continue
        if a["category_id"] in background_ids:
            background += 1
            continue
        if a["image_id"] in dropped_images:
            with_images += 1
            continue
        where = f"annotation id={a['id']} (image id={a['image_id']})"
        if counts[a["id"]] > 1:
            problems.add(KIND_DUPLICATE_ANNOTATION_ID, f"{where}: annotation id {a['id']} appears "
                                                       f"{counts[a['id']]} times")
            continue
        if a["category_id"] not in categories:
            problems.add(KIND_UNKNOWN_CATEGORY, f"{where}: unknown category id {a['category_id']}")
            continue
        im = images.get(a["image_id"])
        if im is None:
            problems.add(KIND_UNKNOWN_IMAGE, f"{where}: no valid image with id {a['image_id']}")
            continue
        kind, message = check_annotation(a, im["height"], im["width"])
        if kind is not None:
            problems.add(kind, f"{where}: {message}")
            continue
        anns.append(a)
    return anns, with_images, background
