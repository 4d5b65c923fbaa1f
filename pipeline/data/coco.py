"""COCO-format datasets: read, validate, and map category ids to contiguous labels and back.

`load_coco(json_path, image_root)` returns a `CocoDataset`:
- `records`: one `ImageRecord` per valid image, images without annotations included (they are
  needed for evaluation; the training dataset leaves them out). A record holds the image's
  non-crowd instances: `labels` int64 [G] (contiguous 0..C-1), `boxes` float32 [G,4] xyxy
  absolute pixels (the annotation's bbox), the raw COCO `segmentations` (polygons, RLE or
  uncompressed RLE; decoded lazily by `instance_rles` / `decode_masks`) and `ann_ids`.
- `coco`: a pycocotools `COCO` built from the cleaned annotations, crowd regions included
  (COCOeval treats them as ignore regions), for evaluation. Results are written with the
  original category ids: `label_to_category[label]`.
- `report`: what was dropped, per kind, and what was renumbered.

Real-world traps handled here:
- Annotation ids must be >= 1: COCOeval stores the matched GT id per detection and reads 0 as
  "unmatched", so a GT with id 0 can never be a true positive (ground truth scored as
  detections gives AP 0.949 instead of 1.0 on labelme's example set). Any id <= 0 makes us
  renumber every annotation 1..N in file order. Image and category ids are kept as they are.
- Categories named like a background (`_background_`, ...) are not object classes: dropped.
- Crowd annotations are not ground truths (mmdetection's `gt_bboxes_ignore`, never collected).

Validation: every problem is a `ValueError` naming the file and the record (image id / file,
annotation id). With `skip_invalid=True` the bad record is dropped instead (an image takes its
annotations with it; a bad annotation leaves the rest of its image) and `report.dropped` counts
them per kind (the `KIND_*` names of `pipeline.data.coco_checks`). A broken JSON
file is always an error.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pipeline.data.coco_checks import (KIND_BACKGROUND_ANNOTATION, Problems, valid_annotations, valid_categories,
                                       valid_images)


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRecord:
    """One image and its non-crowd instances (G of them, in annotation-file order)."""

    image_id: int
    path: str
    height: int
    width: int
    ann_ids: np.ndarray  # int64 [G], ids in `CocoDataset.coco` (renumbered when needed)
    labels: np.ndarray  # int64 [G], contiguous 0..C-1
    boxes: np.ndarray  # float32 [G, 4], xyxy absolute pixels
    segmentations: tuple  # G raw COCO segmentations

    def __len__(self) -> int:
        return len(self.ann_ids)


def instance_rles(record: ImageRecord) -> list[dict]:
    """Compressed RLEs (pycocotools form, `counts` bytes), one per instance of `record`."""
    h, w = record.height, record.width
    return [to_rle(seg, h, w) for seg in record.segmentations]


def to_rle(seg, h: int, w: int) -> dict:
    if isinstance(seg, list):  # polygons: one object may have several parts
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg["counts"], list):  # uncompressed RLE
        return mask_utils.frPyObjects(seg, h, w)
    counts = seg["counts"]
    return {"size": list(seg["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}


def xyxy_boxes(anns: list[dict]) -> np.ndarray:
    """float32 [G, 4] xyxy boxes of annotations (their xywh `bbox`), in float32 arithmetic."""
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)  # [G, 4] xywh
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def decode_masks(record: ImageRecord) -> np.ndarray:
    """bool [G, H, W] masks of the record's instances."""
    if len(record) == 0:
        return np.zeros((0, record.height, record.width), dtype=bool)
    stacked = mask_utils.decode(instance_rles(record))  # uint8 [H, W, G]
    return np.ascontiguousarray(stacked.transpose(2, 0, 1)).astype(bool)  # [G, H, W]


def load_image(path: str, image_id: int | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3]; a missing, unreadable or truncated file is a ValueError naming it."""
    where = f"image {path}" + ("" if image_id is None else f" (image id={image_id})")
    if not os.path.exists(path):
        raise ValueError(f"{where}: file not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{where}: cannot decode ({e})") from None


def load_checked_image(path: str, image_id: int, height: int, width: int) -> np.ndarray:
    """`load_image`, and a ValueError naming the file when its size is not the annotated one."""
    image = load_image(path, image_id)
    if image.shape[:2] != (height, width):
        raise ValueError(f"image {path} (image id={image_id}) is {image.shape[1]}x{image.shape[0]}, "
                         f"the annotations say {width}x{height}")
    return image


@dataclass
class ValidationReport:
    dropped: Counter = field(default_factory=Counter)  # problem kind -> records dropped
    annotations_of_dropped_images: int = 0
    renumbered_annotation_ids: bool = False
    background_categories: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.dropped.items())]
        text = "dropped: " + (", ".join(parts) if parts else "nothing")
        if self.annotations_of_dropped_images:
            text += f" (+{self.annotations_of_dropped_images} annotations of dropped images)"
        if self.renumbered_annotation_ids:
            text += "; annotation ids renumbered from 1"
        if self.background_categories:
            text += f"; background categories ignored: {self.background_categories}"
        return text


@dataclass
class CocoDataset:
    json_path: str
    image_root: str
    records: list[ImageRecord]
    categories: list[dict]  # kept categories in label order: {"id", "name", ...}
    coco: COCO
    report: ValidationReport

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def image_ids(self) -> np.ndarray:
        return np.array([r.image_id for r in self.records], dtype=np.int64)

    @property
    def instance_counts(self) -> np.ndarray:
        return np.array([len(r) for r in self.records], dtype=np.int64)

    @property
    def category_names(self) -> list[str]:
        return [c["name"] for c in self.categories]

    @property
    def label_to_category(self) -> list[int]:
        return [int(c["id"]) for c in self.categories]

    @property
    def category_to_label(self) -> dict[int, int]:
        return {int(c["id"]): i for i, c in enumerate(self.categories)}

    def to_category_ids(self, labels) -> np.ndarray:
        """Contiguous labels [N] -> the dataset's original category ids [N] (for results)."""
        table = np.asarray(self.label_to_category, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(table)):
            raise ValueError(f"labels must lie in 0..{len(table) - 1}, got {labels.min()}..{labels.max()}")
        return table[labels]


def read_json(json_path: str) -> dict:
    if not os.path.exists(json_path):
        raise ValueError(f"{json_path}: annotation file not found")
    try:
        with open(json_path, "rb") as f:
            data = json.loads(f.read())
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_path}: broken JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{json_path}: broken JSON: not UTF-8 ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("categories"), list):
        raise ValueError(f"{json_path}: not a COCO annotation file (needs 'images' and 'categories' lists)")
    if not isinstance(data.get("annotations", []), list):
        raise ValueError(f"{json_path}: 'annotations' must be a list")
    return data


def load_coco(json_path: str, image_root: str, *, skip_invalid: bool = False,
              verify_images: bool = False) -> CocoDataset:
    """Read and validate a COCO-format instance-segmentation dataset.

    Image files are always opened to check they exist, are images and have the size the JSON
    says; `verify_images` also decodes every pixel (catches truncated files; slow on COCO).
    """
    data = read_json(json_path)
    problems = Problems(json_path)
    categories, background_ids = valid_categories(data["categories"], json_path)
    images, dropped_ids = valid_images(data["images"], image_root, verify_images, problems)
    anns, with_images, background = valid_annotations(
        data.get("annotations", []), images, dropped_ids, categories, background_ids, problems)
    anns = [_completed(a, images[a["image_id"]]["height"], images[a["image_id"]]["width"]) for a in anns]
    report = ValidationReport(background_categories=sorted(
        c["name"] for c in data["categories"] if c.get("id") in background_ids),
        annotations_of_dropped_images=with_images)
    report.dropped.update(k for k, _ in problems.items)
    if not skip_invalid:
        problems.raise_if_any()
    if background:
        report.dropped[KIND_BACKGROUND_ANNOTATION] += background
    if any(a["id"] <= 0 for a in anns):
        report.renumbered_annotation_ids = True
        anns = [dict(a, id=i + 1) for i, a in enumerate(anns)]
    kept = sorted(categories.values(), key=lambda c: c["id"])
    cat_to_label = {c["id"]: i for i, c in enumerate(kept)}
    clean = {"images": list(images.values()), "annotations": anns, "categories": kept}
    for key in ("info", "licenses"):
        if key in data:
            clean[key] = data[key]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco = COCO()
        coco.dataset = clean
        coco.createIndex()
    records = _records(images, anns, cat_to_label, image_root)
    if problems.items:
        log.warning("%s: %s", json_path, report.summary())
    return CocoDataset(json_path=json_path, image_root=image_root, records=records,
                       categories=kept, coco=coco, report=report)


def _completed(a: dict, h: int, w: int) -> dict:
    """The annotation with `bbox`, `area` and `iscrowd` filled in when the file left them out."""
    if "bbox" in a and "area" in a and "iscrowd" in a:
        return a
    rle = to_rle(a["segmentation"], h, w)
    return dict(a, bbox=a.get("bbox", [float(v) for v in mask_utils.toBbox(rle)]),
                area=a.get("area", float(mask_utils.area(rle))), iscrowd=a.get("iscrowd", 0))


def _records(images: dict[int, dict], anns: list[dict], cat_to_label: dict[int, int],
             image_root: str) -> list[ImageRecord]:
    per_image: dict[int, list[dict]] = {i: [] for i in images}
    for a in anns:
        if not a.get("iscrowd", 0):
            per_image[a["image_id"]].append(a)
    records = []
    for image_id, im in images.items():
        items = per_image[image_id]
        boxes = xyxy_boxes(items)
        records.append(ImageRecord(
            image_id=image_id, path=os.path.join(image_root, im["file_name"]),
            height=im["height"], width=im["width"],
            ann_ids=np.array([a["id"] for a in items], dtype=np.int64),
            labels=np.array([cat_to_label[a["category_id"]] for a in items], dtype=np.int64),
            boxes=boxes, segmentations=tuple(a["segmentation"] for a in items)))
    return records
