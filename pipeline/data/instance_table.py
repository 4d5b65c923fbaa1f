"""The per-instance Parquet table: its schema (the one place it is written down), how the rows
of an image are computed from its annotations, validation, and the reader of integrals.

One row per annotation the dataset keeps (crowd regions included: evaluation needs them as
ignore regions), rows grouped by image in annotation-file order, images in dataset order;
`instance` is the index of a non-crowd row in its `ImageRecord` (-1 for a crowd region):

| column       | type                 | meaning |
|--------------|----------------------|---------|
| image_id     | int64                | the dataset's image id |
| instance     | int32                | index of the instance within its image; -1: crowd |
| iscrowd      | bool                 | a crowd region (an ignore region for COCOeval, never a training target) |
| ann_id       | int64                | annotation id (as in `CocoDataset.coco`) |
| label        | int32                | contiguous label 0..C-1 |
| category_id  | int64                | the dataset's category id |
| image_height | int32                | H of the original image |
| image_width  | int32                | W |
| box          | fixed list<float32>[4] | annotation box, xyxy original pixels (as `ImageRecord.boxes`) |
| bbox         | fixed list<float64>[4] | the annotation's own `bbox` (xywh), for evaluation |
| ann_area     | float64              | the annotation's own `area`, for evaluation |
| area         | int64                | mask pixels, whole mask |
| mob          | float32              | mask-over-box ratio area / box area (0 for a degenerate box) |
| rle          | binary               | COCO compressed RLE counts of the mask (size = H, W) |
| region       | fixed list<int32>[4] | (y0, x0, h, w): tight pixel box of the mask; 0×0 if empty |
| integral     | binary, nullable     | int32 little-endian [(h+1)·(w+1)], row-major integral image of the region with a zero first row and column; null in the "rle" layout |

Layouts: "integral" stores the region integrals (read = one buffer slice per image, no
compute); "rle" (the default) stores only the RLE and builds the integrals at read time: about
110x smaller and 2-3x faster to write, for ~5 ms more per image read. See docs/benchmarks.md
(data section) for the numbers behind the choice.

The images of a split, those without annotations included, are in a second, small table
(`IMAGE_SCHEMA`, `images.parquet`): file, size and where the image's rows are.
"""
from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from pycocotools import mask as mask_utils

from assigners import MaskIntegrals
from pipeline.data.coco import to_rle, xyxy_boxes

SCHEMA_VERSION = "2"
LAYOUTS = ("integral", "rle")
SHARD_GLOB = "shard-*.parquet"
PYCOCOTOOLS_AREA_CHUNK = 255

SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("instance", pa.int32(), nullable=False),
        pa.field("iscrowd", pa.bool_(), nullable=False),
        pa.field("ann_id", pa.int64(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("category_id", pa.int64(), nullable=False),
        pa.field("image_height", pa.int32(), nullable=False),
        pa.field("image_width", pa.int32(), nullable=False),
        pa.field("box", pa.list_(pa.float32(), 4), nullable=False),
        pa.field("bbox", pa.list_(pa.float64(), 4), nullable=False),
        pa.field("ann_area", pa.float64(), nullable=False),
        pa.field("area", pa.int64(), nullable=False),
        pa.field("mob", pa.float32(), nullable=False),
        pa.field("rle", pa.binary(), nullable=False),
        pa.field("region", pa.list_(pa.int32(), 4), nullable=False),
        pa.field("integral", pa.binary(), nullable=True),
    ],
    metadata={"maskaware.schema_version": SCHEMA_VERSION},
)
IMAGE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("file_name", pa.string(), nullable=False),  # relative to the split's image root
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),  # index of the shard file holding its rows
        pa.field("first_row", pa.int64(), nullable=False),  # its first row in that shard
        pa.field("rows", pa.int32(), nullable=False),  # its annotations, crowd regions included
        pa.field("instances", pa.int32(), nullable=False),  # its non-crowd instances
    ],
    metadata={"maskaware.schema_version": SCHEMA_VERSION},
)


def region_integral(crop: np.ndarray) -> np.ndarray:
    """bool [h, w] -> int32 [h+1, w+1] integral image with a zero first row and column."""
    out = np.zeros((crop.shape[0] + 1, crop.shape[1] + 1), dtype=np.int32)
    np.cumsum(crop, axis=0, dtype=np.int32, out=out[1:, 1:])
    np.cumsum(out[1:, 1:], axis=1, dtype=np.int32, out=out[1:, 1:])
    return out


def rle_areas(rles: list[dict]) -> np.ndarray:
    """int64 [N] mask areas. pycocotools' `area` overflows past 255 RLEs per call under numpy 2
    (it sizes its output with a uint8 array), so it is called in chunks."""
    parts = [mask_utils.area(rles[i:i + PYCOCOTOOLS_AREA_CHUNK]).astype(np.int64)
             for i in range(0, len(rles), PYCOCOTOOLS_AREA_CHUNK)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def image_columns(image: dict, anns: list[dict], cat_to_label: dict[int, int], layout: str) -> dict[str, list]:
    """The table's columns for one image (`load_coco`'s cleaned image and annotation dicts, in
    file order): python lists, one entry per annotation."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    cols: dict[str, list] = {f.name: [] for f in SCHEMA}
    if not anns:
        return cols
    h, w = image["height"], image["width"]
    rles = [to_rle(a["segmentation"], h, w) for a in anns]
    decoded = mask_utils.decode(rles)  # uint8 [H, W, G], Fortran order
    bboxes = mask_utils.toBbox(rles)  # [G, 4] xywh of the mask pixels
    boxes = xyxy_boxes(anns)
    instance = 0
    for g, (a, rle) in enumerate(zip(anns, rles)):
        x0, y0, rw, rh = (int(v) for v in bboxes[g])
        crop = decoded[y0:y0 + rh, x0:x0 + rw, g].astype(bool)
        area = int(crop.sum())
        box = boxes[g]
        box_area = float((box[2] - box[0]) * (box[3] - box[1]))
        crowd = bool(a.get("iscrowd", 0))
        cols["image_id"].append(int(image["id"]))
        cols["instance"].append(-1 if crowd else instance)
        instance += not crowd
        cols["iscrowd"].append(crowd)
        cols["ann_id"].append(int(a["id"]))
        cols["label"].append(cat_to_label[a["category_id"]])
        cols["category_id"].append(int(a["category_id"]))
        cols["image_height"].append(h)
        cols["image_width"].append(w)
        cols["box"].append([float(v) for v in box])
        cols["bbox"].append([float(v) for v in a["bbox"]])
        cols["ann_area"].append(float(a["area"]))
        cols["area"].append(area)
        cols["mob"].append(area / box_area if box_area > 0 else 0.0)
        cols["rle"].append(rle["counts"])
        cols["region"].append([y0, x0, rh, rw])
        cols["integral"].append(region_integral(crop).tobytes() if layout == "integral" else None)
    return cols


def columns_to_table(cols: dict[str, list]) -> pa.Table:
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def validate_table(table: pa.Table, where: str, expected_rows: int | None = None) -> None:
    """Check a table read back from disk: schema, row count, and every row's self-consistency
    (integral corner = area = RLE area, region inside the image). Raises ValueError naming `where`."""
    if not table.schema.equals(SCHEMA, check_metadata=False):
        raise ValueError(f"{where}: schema differs from pipeline.data.instance_table.SCHEMA:\n{table.schema}")
    if expected_rows is not None and table.num_rows != expected_rows:
        raise ValueError(f"{where}: {table.num_rows} rows, expected {expected_rows}")
    region = _fixed(table.column("region"), np.int32, 4)  # [N, 4]
    area = table.column("area").to_numpy()
    h, w = table.column("image_height").to_numpy(), table.column("image_width").to_numpy()
    if ((region[:, 0] + region[:, 2] > h) | (region[:, 1] + region[:, 3] > w) | (region < 0).any(1)).any():
        raise ValueError(f"{where}: a mask region lies outside its image")
    rles = [{"size": [int(a), int(b)], "counts": c} for a, b, c in
            zip(h, w, table.column("rle").to_pylist())]
    if rles and not np.array_equal(rle_areas(rles), area):
        raise ValueError(f"{where}: RLE areas disagree with the 'area' column")
    integral = table.column("integral")
    if integral.null_count < table.num_rows:
        data, offsets = _binary_buffers(integral)
        sizes = (region[:, 2].astype(np.int64) + 1) * (region[:, 3] + 1)
        if not np.array_equal(np.diff(offsets), sizes):
            raise ValueError(f"{where}: integral sizes disagree with the regions")
        corners = data[offsets[1:] - 1] if len(data) else np.zeros(0, np.int32)
        if not np.array_equal(corners.astype(np.int64), area):
            raise ValueError(f"{where}: integral totals disagree with the 'area' column")


def _fixed(col: pa.ChunkedArray, dtype, width: int) -> np.ndarray:
    arr = col.combine_chunks()
    return arr.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(-1, width)  # [N, width]


def _binary_buffers(col) -> tuple[np.ndarray, np.ndarray]:
    """A binary column of int32 payloads as (data int32 [total], element offsets int64 [N+1])."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + len(arr) + 1]
    payload = arr.buffers()[2]
    data = np.frombuffer(payload, dtype=np.int32) if payload is not None else np.zeros(0, np.int32)
    return data, (offsets.astype(np.int64) // 4)


class InstanceStore:
    """All shards of a precomputed directory, memory-mapped, with an image_id -> rows index
    (the non-crowd rows: the instances of `ImageRecord`s).

    Open once per data-loading worker; `integrals(image_id)` returns the image's instances'
    MaskIntegrals in original-image coordinates, in record order.
    """

    def __init__(self, parquet_dir: str):
        files = sorted(glob.glob(os.path.join(parquet_dir, SHARD_GLOB)))
        if not files:
            raise ValueError(f"{parquet_dir}: no {SHARD_GLOB} files; run `python -m jobs.precompute` first")
        tables = [pq.read_table(f, memory_map=True) for f in files]
        for f, t in zip(files, tables):
            if not t.schema.equals(SCHEMA, check_metadata=False):
                raise ValueError(f"{f}: schema differs from pipeline.data.instance_table.SCHEMA")
        table = pa.concat_tables(tables)
        self.table = table.filter(pc.invert(table.column("iscrowd"))).combine_chunks()
        self.parquet_dir = parquet_dir
        ids = self.table.column("image_id").to_numpy()
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, np.int64)
        counts = np.diff(np.r_[starts, len(ids)])
        self.index = {int(ids[s]): (int(s), int(c)) for s, c in zip(starts, counts)}
        if len(self.index) != len(starts):
            raise ValueError(f"{parquet_dir}: an image's rows are not contiguous")
        self.layout = "rle" if self.table.column("integral").null_count == self.table.num_rows else "integral"
        self._region = _fixed(self.table.column("region"), np.int64, 4)  # [N, 4] y0, x0, h, w
        self._area = self.table.column("area").to_numpy()
        self._hw = np.stack([self.table.column("image_height").to_numpy(),
                             self.table.column("image_width").to_numpy()], 1)  # [N, 2]
        if self.layout == "integral":
            self._data, self._offsets = _binary_buffers(self.table.column("integral"))
        self._rle = self.table.column("rle")

    def __len__(self) -> int:
        return self.table.num_rows

    def rows(self, image_id: int) -> tuple[int, int]:
        """(first row, count) of an image; (0, 0) for an image without instances."""
        return self.index.get(int(image_id), (0, 0))

    def integrals(self, image_id: int, expected: int | None = None) -> MaskIntegrals:
        start, count = self.rows(image_id)
        if expected is not None and count != expected:
            raise ValueError(f"{self.parquet_dir}: image {image_id} has {count} instances in Parquet but "
                             f"{expected} in the dataset; re-run the precompute")
        if count == 0:
            return MaskIntegrals.from_regions([], [], (0, 0))
        region = self._region[start:start + count]  # [G, 4]
        image_size = (int(self._hw[start, 0]), int(self._hw[start, 1]))
        if self.layout == "rle":
            return self._integrals_from_rle(start, count, region, image_size)
        lo, hi = self._offsets[start], self._offsets[start + count]
        return MaskIntegrals(
            data=torch.from_numpy(np.array(self._data[lo:hi], dtype=np.int32)),
            offset=torch.from_numpy(np.asarray(self._offsets[start:start + count] - lo, dtype=np.int64)),
            origin=torch.from_numpy(region[:, :2].copy()),
            size=torch.from_numpy(region[:, 2:].copy()),
            total=torch.from_numpy(self._area[start:start + count].astype(np.int64)),
            image_size=image_size).prepared()  # as every constructor: no table building in the step

    def _integrals_from_rle(self, start, count, region, image_size) -> MaskIntegrals:
        h, w = image_size
        rles = [{"size": [h, w], "counts": c} for c in self._rle.slice(start, count).to_pylist()]
        decoded = mask_utils.decode(rles)  # uint8 [H, W, G]
        regions = [torch.from_numpy(region_integral(decoded[y0:y0 + rh, x0:x0 + rw, g].astype(bool)))  # [h+1, w+1]
                   for g, (y0, x0, rh, rw) in enumerate(region)]
        return MaskIntegrals.from_regions(regions, [(int(y0), int(x0)) for y0, x0, _, _ in region], image_size)
