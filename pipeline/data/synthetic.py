"""The built-in synthetic dataset: a real COCO-format dataset of shapes whose masks fill their
boxes to very different degrees, which is what mask-aware assignment is about.

`generate(out_dir, train_images, val_images, size, seed)` writes
    out_dir/annotations/{train,val}.json   COCO instances (compressed RLE, ids from 1)
    out_dir/images/{train,val}/NNNNNN.png  RGB images, size × size
    out_dir/meta.json                      the parameters and the per-category MOB statistics
`ensure_synthetic(data_cfg)` generates once into a directory keyed by the parameters.

Scenes and their categories (shape families) are drawn by `pipeline.data.scenes`. Every image is
drawn from its own generator seeded by (seed, split, index): deterministic, and independent of
the number of worker processes.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from pipeline.data.scenes import CATEGORIES, render_scene

GENERATOR_VERSION = 1  # bump when scenes change, so cached datasets are not reused
SPLITS = {"train": 0, "val": 1}
PNG_COMPRESS_LEVEL = 1  # fast to write; the files are ~30 % larger than at the default level
MOB_BINS = np.linspace(0.0, 1.0, 11)
MIN_BOX_AREA = 1e-9  # floor of the box area in `mob_of`, so a degenerate box gives no division by 0


def _make_image(task: tuple) -> tuple[dict, list[dict]]:
    """Render and save one image; returns its COCO image entry and annotations (ids unset)."""
    out_dir, split, index, image_id, size, seed = task
    rng = np.random.default_rng([seed, SPLITS[split], index])
    image, masks, labels = render_scene(rng, size)
    file_name = f"{split}/{image_id:06d}.png"
    Image.fromarray(image).save(os.path.join(out_dir, "images", file_name), compress_level=PNG_COMPRESS_LEVEL)
    anns = []
    for mask, label in zip(masks, labels):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        x0, y0 = int(cols[0]), int(rows[0])
        bbox = [x0, y0, int(cols[-1]) + 1 - x0, int(rows[-1]) + 1 - y0]  # tight pixel box, xywh
        anns.append({"image_id": image_id, "category_id": label + 1, "iscrowd": 0,
                     "segmentation": {"size": [size, size], "counts": rle["counts"].decode()},
                     "area": float(mask.sum()), "bbox": [float(v) for v in bbox]})
    return {"id": image_id, "file_name": file_name, "height": size, "width": size}, anns


def categories() -> list[dict]:
    """The COCO category list: ids 1..4 in the order of CATEGORIES."""
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CATEGORIES)]


def generate(out_dir: str, train_images: int, val_images: int, size: int, seed: int,
             workers: int | None = None, progress: bool = True) -> dict:
    """Write the dataset into `out_dir` (created); returns meta (parameters + MOB statistics)."""
    if train_images < 1 or val_images < 0 or size < 32:
        raise ValueError(f"need train_images >= 1, val_images >= 0, size >= 32; got "
                         f"{train_images}, {val_images}, {size}")
    workers = workers or os.cpu_count() or 1
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    counts = {"train": train_images, "val": val_images}
    first_id = {"train": 1, "val": train_images + 1}
    tasks = {s: [(out_dir, s, i, first_id[s] + i, size, seed) for i in range(n)] for s, n in counts.items()}
    for split in counts:
        os.makedirs(os.path.join(out_dir, "images", split), exist_ok=True)
    meta = {"train_images": train_images, "val_images": val_images, "size": size, "seed": seed,
            "generator_version": GENERATOR_VERSION, "categories": list(CATEGORIES)}
    ctx = mp.get_context("fork") if workers > 1 else None
    pool = ctx.Pool(workers) if ctx else None
    try:
        for split, items in tasks.items():
            mapper = pool.imap(_make_image, items, chunksize=8) if pool else map(_make_image, items)
            bar = tqdm(mapper, total=len(items), desc=f"synth {split}", disable=not progress, unit="img")
            images, anns = [], []
            for image, image_anns in bar:
                images.append(image)
                for a in image_anns:
                    anns.append(dict(a, id=len(anns) + 1))
            data = {"info": {"description": f"maskaware synthetic shapes ({split})", **meta},
                    "images": images, "annotations": anns, "categories": categories()}
            with open(os.path.join(out_dir, "annotations", f"{split}.json"), "w") as f:
                json.dump(data, f)
            meta[f"{split}_instances"] = len(anns)
            meta[f"{split}_mob"] = mob_statistics(anns)
    finally:
        if pool:
            pool.close()
            pool.join()
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


# --- MOB statistics --------------------------------------------------------------------------

def mob_of(anns: list[dict]) -> np.ndarray:
    """Mask-over-box ratio of COCO annotations (area / bbox area), float64 [N]."""
    area = np.array([a["area"] for a in anns], dtype=np.float64)
    box = np.array([a["bbox"][2] * a["bbox"][3] for a in anns], dtype=np.float64)
    return area / np.maximum(box, MIN_BOX_AREA)


def mob_statistics(anns: list[dict]) -> dict:
    """Per category name: counts in MOB_BINS, fraction below 0.5, and COCO size counts."""
    mob = mob_of(anns)
    cats = np.array([a["category_id"] for a in anns], dtype=np.int64)
    areas = np.array([a["area"] for a in anns], dtype=np.float64)
    stats = {}
    for i, name in enumerate(("all",) + CATEGORIES):
        sel = np.ones(len(anns), dtype=bool) if i == 0 else cats == i
        hist, _ = np.histogram(mob[sel], bins=MOB_BINS)
        stats[name] = {"count": int(sel.sum()), "hist": hist.tolist(),
                       "below_0.5": float((mob[sel] < 0.5).mean()) if sel.any() else 0.0,
                       "small": int((areas[sel] < 32**2).sum()),
                       "medium": int(((areas[sel] >= 32**2) & (areas[sel] < 96**2)).sum()),
                       "large": int((areas[sel] >= 96**2).sum())}
    return stats


def format_mob_table(stats: dict) -> str:
    """A text table of `mob_statistics`: one row per category, one column per MOB bin."""
    head = "".join(f"{lo:>6.1f}" for lo in MOB_BINS[:-1])
    lines = [f"{'category':<9}{'n':>7} | MOB bin start:{head} | <0.5   S/M/L"]
    for name, s in stats.items():
        cells = "".join(f"{c:>6d}" for c in s["hist"])
        lines.append(f"{name:<9}{s['count']:>7} | {'':14}{cells} | {s['below_0.5']:4.0%}  "
                     f"{s['small']}/{s['medium']}/{s['large']}")
    return "\n".join(lines)


# --- cached generation -----------------------------------------------------------------------

def synthetic_key(train_images: int, val_images: int, size: int, seed: int) -> str:
    return f"train{train_images}_val{val_images}_size{size}_seed{seed}_v{GENERATOR_VERSION}"


def ensure_synthetic(data_cfg, progress: bool = False) -> str:
    """The dataset directory for `data_cfg`'s synthetic parameters, generated on first use.

    Generation goes to a temporary sibling directory that is renamed into place when complete,
    so a crash never leaves a half-written dataset behind and concurrent callers agree.
    """
    root = os.path.expanduser(data_cfg.synthetic_dir)
    final = os.path.join(root, synthetic_key(data_cfg.synthetic_train_images, data_cfg.synthetic_val_images,
                                             data_cfg.synthetic_size, data_cfg.synthetic_seed))
    if os.path.exists(os.path.join(final, "meta.json")):
        return final
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=root)
    try:
        generate(tmp, data_cfg.synthetic_train_images, data_cfg.synthetic_val_images,
                 data_cfg.synthetic_size, data_cfg.synthetic_seed, progress=progress)
        try:
            os.rename(tmp, final)
        except OSError:  # someone else finished first
            if not os.path.exists(os.path.join(final, "meta.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
