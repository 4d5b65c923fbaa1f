"""A split read from its precomputed tables (`data.source = "parquet"`): the training and
evaluation input, with the interface of `CocoDataset` that `InstanceDataset` uses.

`TableSource(uri, image_root)` reads `images.parquet` and the manifest only (file names, sizes,
where each image's rows are; categories): no JSON, no image headers. An image's instance rows
are read when the image is asked for (`records[i]`), from the row groups that hold them, so a
training worker reads the rows of the images it draws and nothing else. The evaluation ground
truth (`coco`) is rebuilt from the tables on first use, with the annotations of `load_coco`'s
COCO object, in the same order, so COCOeval gives the same numbers.

`uri` is a local directory or an object-store URI (`s3://bucket/prefix/val`): the filesystem is
resolved once by `filesystem_of`, the one place that knows about URIs.
"""
from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pycocotools.coco import COCO

from pipeline.data.coco import ImageRecord
from pipeline.data.table_dir import IMAGES_FILE, MANIFEST

RECORD_COLUMNS = ["iscrowd", "ann_id", "label", "box", "rle"]  # what a training sample needs
GT_COLUMNS = ["image_id", "ann_id", "category_id", "iscrowd", "bbox", "ann_area", "rle"]


def filesystem_of(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path in it) of a local path or a URI such as s3://bucket/key."""
    if "://" not in uri:
        uri = os.path.abspath(os.path.expanduser(uri))
    return pafs.FileSystem.from_uri(uri)


class TableSource:
    """One split's tables. Picklable: open files and caches are dropped and reopened lazily."""

    def __init__(self, uri: str, image_root: str):
        self.uri, self.image_root = uri, image_root
        self.fs, self.root = filesystem_of(uri)
        try:
            with self.fs.open_input_stream(f"{self.root}/{MANIFEST}") as f:
                manifest = json.loads(f.read())
            images = pq.read_table(f"{self.root}/{IMAGES_FILE}", filesystem=self.fs)
        except (OSError, ValueError) as e:
            raise ValueError(f"{uri}: no precomputed tables ({e}); run `python -m jobs.precompute`") from None
        self.category_names: list[str] = manifest["category_names"]
        self.label_to_category: list[int] = manifest["label_to_category"]
        self.shard_names = sorted(manifest["shards"])
        cols = {name: images.column(name).to_numpy() for name in
                ("image_id", "height", "width", "shard", "first_row", "rows", "instances")}
        self.image_ids = cols["image_id"]
        self.instance_counts = cols["instances"]
        self._images = cols
        self._file_names = images.column("file_name").combine_chunks()  # arrow: no 118k Python strs
        self.records = TableRecords(self)
        self._reset()

    def _reset(self) -> None:
        self._files: dict[int, tuple[pq.ParquetFile, np.ndarray]] = {}  # shard -> (file, group starts)
        self._group: tuple[int, int, pa.Table] | None = None  # the last row group read
        self._coco: COCO | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_files={}, _group=None, _coco=None, fs=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.fs, _ = filesystem_of(self.uri)

    @property
    def num_classes(self) -> int:
        return len(self.category_names)

    # reading rows ----------------------------------------------------------------------------
    def _file(self, shard: int) -> tuple[pq.ParquetFile, np.ndarray]:
        if shard not in self._files:
            f = pq.ParquetFile(f"{self.root}/{self.shard_names[shard]}", filesystem=self.fs)
            sizes = [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)]
            self._files[shard] = (f, np.cumsum([0] + sizes))  # [groups + 1] first row of each group
        return self._files[shard]

    def rows(self, shard: int, first: int, count: int, columns: list[str]) -> pa.Table:
        """Rows [first, first + count) of a shard, read from the row groups that hold them."""
        f, starts = self._file(shard)
        if count == 0:  # an image without annotations (possibly after the shard's last row)
            return f.schema_arrow.empty_table().select(columns)
        g0 = int(np.searchsorted(starts, first, side="right")) - 1
        g1 = int(np.searchsorted(starts, first + count, side="left"))
        if self._group is not None and self._group[:2] == (shard, g0) and g1 == g0 + 1 \
                and self._group[2].column_names == columns:
            group = self._group[2]
        else:
            group = f.read_row_groups(list(range(g0, g1)), columns=columns)
            self._group = (shard, g0, group)
        return group.slice(first - int(starts[g0]), count)

    def record(self, i: int) -> ImageRecord:
        """Image i (dataset order) with its non-crowd instances, as `load_coco` makes it."""
        im = {k: int(v[i]) for k, v in self._images.items()}
        rows = self.rows(im["shard"], im["first_row"], im["rows"], RECORD_COLUMNS)
        rows = rows.filter(pc.invert(rows.column("iscrowd")))
        size = [im["height"], im["width"]]
        boxes = rows.column("box").combine_chunks().values.to_numpy().reshape(-1, 4)  # [G, 4] xyxy
        return ImageRecord(
            image_id=im["image_id"], path=os.path.join(self.image_root, self._file_names[i].as_py()),
            height=im["height"], width=im["width"],
            ann_ids=rows.column("ann_id").to_numpy().astype(np.int64),
            labels=rows.column("label").to_numpy().astype(np.int64),
            boxes=boxes.astype(np.float32, copy=True),
            segmentations=tuple({"size": size, "counts": c} for c in rows.column("rle").to_pylist()))

    # evaluation ground truth -----------------------------------------------------------------
    @property
    def coco(self) -> COCO:
        """pycocotools COCO of every image and annotation (crowd regions included), built once."""
        if self._coco is None:
            self._coco = self._build_coco()
        return self._coco

    def _build_coco(self) -> COCO:
        files = [f"{self.root}/{name}" for name in self.shard_names]
        table = pa.concat_tables([pq.read_table(p, columns=GT_COLUMNS, filesystem=self.fs) for p in files])
        h, w = self._images["height"], self._images["width"]
        position = {int(image_id): k for k, image_id in enumerate(self.image_ids)}
        images = [{"id": int(i), "file_name": self._file_names[k].as_py(), "height": int(h[k]),
                   "width": int(w[k])} for k, i in enumerate(self.image_ids)]
        anns = []
        for row in table.to_pylist():
            k = position[row["image_id"]]
            anns.append({"id": row["ann_id"], "image_id": row["image_id"], "category_id": row["category_id"],
                         "iscrowd": int(row["iscrowd"]), "bbox": row["bbox"], "area": row["ann_area"],
                         "segmentation": {"size": [int(h[k]), int(w[k])], "counts": row["rle"]}})
        categories = [{"id": c, "name": n} for c, n in zip(self.label_to_category, self.category_names)]
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO()
            coco.dataset = {"images": images, "annotations": anns, "categories": categories}
            coco.createIndex()
        return coco


class TableRecords:
    """`TableSource.records`: a read-only sequence of `ImageRecord`s, each read on access."""

    def __init__(self, source: TableSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source.image_ids)

    def __getitem__(self, i: int) -> ImageRecord:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.source.record(int(i) % len(self))
