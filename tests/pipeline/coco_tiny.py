"""Tiny COCO datasets and predictions built in memory, for the evaluation tests.

Rectangles on the integer pixel grid: a box [x0, y0, x1, y1] covers rows y0..y1-1 and columns
x0..x1-1, so its mask IoU equals its box IoU and hand-computed values hold for segm and bbox.
"""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO


def box_mask(xyxy, height: int, width: int) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in xyxy)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def make_coco(images: dict[int, tuple[int, int]], cat_ids, anns: list[dict]) -> COCO:
    """`images`: id -> (h, w); `anns`: dicts with image_id, category_id, box (xyxy) and optional
    mask (bool [h, w], default the box's rectangle), iscrowd and id (default 1, 2, ...)."""
    annotations = []
    for i, a in enumerate(anns):
        h, w = images[a["image_id"]]
        mask = a["mask"] if a.get("mask") is not None else box_mask(a["box"], h, w)
        x0, y0, x1, y1 = (float(v) for v in a["box"])
        annotations.append({
            "id": a.get("id", i + 1), "image_id": a["image_id"], "category_id": a["category_id"],
            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(mask.sum()),
            "segmentation": encode(mask), "iscrowd": int(a.get("iscrowd", 0)),
        })
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "height": h, "width": w, "file_name": f"{i}.png"} for i, (h, w) in images.items()],
        "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids],
        "annotations": annotations,
    }
    coco.createIndex()
    return coco


def make_prediction(image_id: int, size: tuple[int, int], dets: list[tuple]) -> dict:
    """`dets`: (xyxy, score, label) or (xyxy, score, label, mask) in the order given."""
    h, w = size
    boxes = np.array([d[0] for d in dets], dtype=np.float32).reshape(-1, 4)  # [N, 4]
    masks = [d[3] if len(d) > 3 else box_mask(d[0], h, w) for d in dets]
    return {
        "image_id": image_id,
        "boxes": boxes,
        "scores": np.array([d[1] for d in dets], dtype=np.float32),
        "labels": np.array([d[2] for d in dets], dtype=np.int64),
        "masks": np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool),  # [N, h, w]
    }
