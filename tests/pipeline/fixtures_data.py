"""Shared data fixtures for the pipeline tests: tiny hand-made COCO sets and the real voc-mini.

The `voc_mini` fixture lives in `tests/pipeline/conftest.py`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from pipeline.data.coco import load_coco
from pipeline.data.instance_table import columns_to_table, image_columns


def ring_mask(h: int, w: int, cy: float, cx: float, r_out: float, r_in: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    d2 = (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2
    return (d2 <= r_out**2) & (d2 > r_in**2)


def write_tiny_coco(root: Path, mutate=None) -> Path:
    """Two small images, three instances (polygon, compressed RLE, uncompressed RLE), ids from 1.

    `mutate(data, root)` may edit the dict (and the image files) before it is written.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sizes = {1: (30, 40), 2: (40, 50)}  # image id -> (h, w)
    for image_id, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / f"im{image_id}.png")
    ring = ring_mask(40, 50, 20, 25, 12, 6)
    rle = mask_utils.encode(np.asfortranarray(ring.astype(np.uint8)))
    square = np.zeros((40, 50), dtype=np.uint8)
    square[5:15, 30:45] = 1
    flat = square.flatten(order="F")  # column-major, as COCO's RLE
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()  # starts with a 0-run
    data = {
        "images": [{"id": i, "file_name": f"im{i}.png", "height": h, "width": w} for i, (h, w) in sizes.items()],
        "categories": [{"id": 3, "name": "ring"}, {"id": 7, "name": "block"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "iscrowd": 0, "area": 80.0,
             "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]], "bbox": [2, 2, 10, 8]},
            {"id": 2, "image_id": 2, "category_id": 3, "iscrowd": 0, "area": float(ring.sum()),
             "segmentation": {"size": [40, 50], "counts": rle["counts"].decode()},
             "bbox": [float(v) for v in mask_utils.toBbox(rle)]},
            {"id": 3, "image_id": 2, "category_id": 7, "iscrowd": 0, "area": 150.0,
             "segmentation": {"size": [40, 50], "counts": runs}, "bbox": [30, 5, 15, 10]},
        ],
    }
    if mutate is not None:
        mutate(data, root)
    path = root / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def write_tables_without_ray(json_path, image_root, out_dir):
    """The precompute's rows, written in-process (the Ray path is tested in test_precompute)."""
    import pyarrow.parquet as pq

    source = load_coco(json_path, image_root)
    cols = {}
    for image in source.coco.dataset["images"]:
        anns = source.coco.imgToAnns[image["id"]]
        for k, v in image_columns(image, anns, source.category_to_label, "integral").items():
            cols.setdefault(k, []).extend(v)
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(columns_to_table(cols), out_dir / "shard-00000-of-00001.parquet")
    (out_dir / "_manifest.json").write_text(json.dumps({"category_names": source.category_names}))
    return source
