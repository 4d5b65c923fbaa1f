"""Integral images of instance masks, and the box-count lookup the mask-aware overlaps need.

Two forms:
- `integral_image(masks)` -> int32 [G, H+1, W+1], `I[g, y, x]` = mask pixels with row < y and
  col < x (docs/design.md §5). Simple; for tests and small images.
- `MaskIntegrals`: the compact per-image form. Each instance keeps only the integral image of
  the region that holds all its mask pixels, all of them in one flat int32 buffer, so a batch of
  instances costs O(Σ region area) instead of O(G·H·W) and a lookup is one vectorised gather.
  `MaskIntegrals.from_full(I)` wraps a full integral image without copying (region = image).
  The constructors also build small per-instance lookup tables (`prepared()`), which `to`,
  `select`, `with_transform` and pickling carry along, so that counting in the training step
  is a handful of tensor ops.

Counting follows the official maIoU code: box corners rounded half to even (`torch.round`),
clamped to the image, and the half-open pixel rectangle [x1, x2) × [y1, y2) counted.

A `MaskIntegrals` may also describe masks that live in another frame than the boxes it is asked
about (the Parquet path: integrals of the original image, boxes in augmented network-input
coordinates). `affine` maps query boxes to that frame before rounding and `window` restricts
counting to the part of it that survived cropping; `area_scale()` converts pixel counts of that
frame into areas of the query frame.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from itertools import accumulate

import torch
from torch import Tensor

# A row prefix sum of a bool row fits int16 while the row is shorter than this.
_INT16_ROW_LIMIT = 2**15
# The corners I[y1,x1], I[y1,x2], I[y2,x1], I[y2,x2] of a box: their signs in its pixel count,
# and which rectangle coordinate (row: x1, y1, x2, y2) enters each corner's buffer index.
_CORNER_SIGNS = (1.0, -1.0, -1.0, 1.0)
_PICK = ((1, 0, 1, 0), (1, 1, 0, 0), (0, 1, 0, 1), (0, 0, 1, 1))


def integral_image(masks: Tensor) -> Tensor:
    """bool [G, H, W] -> int32 [G, H+1, W+1] with a leading zero row and column."""
    if masks.dim() != 3:
        raise ValueError(f"masks must be [G, H, W], got shape {tuple(masks.shape)}")
    if masks.dtype != torch.bool:
        raise ValueError(f"masks must be bool, got {masks.dtype} (shape {tuple(masks.shape)})")
    g, h, w = masks.shape
    out = torch.zeros((g, h + 1, w + 1), dtype=torch.int32, device=masks.device)
    # Row sums in int16 first (exact for rows < 2^15 pixels): half the memory traffic of int32.
    row_dtype = torch.int16 if w < _INT16_ROW_LIMIT else torch.int32
    pixels = masks.view(torch.uint8)  # [G, H, W]
    for i in range(g):  # a 2-D column cumsum per instance is ~2× faster than one over [G, H, W]
        out[i, 1:, 1:] = pixels[i].cumsum(1, dtype=row_dtype).cumsum(0, dtype=torch.int32)
    return out


@dataclass(frozen=True)
class MaskIntegrals:
    """Per-instance integral images over each mask's own pixel region, in one flat buffer.

    data    int32 [N]     the regions' integral images, each [h+1, w+1], row-major, concatenated
    offset  int64 [G]     start of instance g in `data`
    origin  int64 [G, 2]  (y0, x0): image pixel of the region's top-left corner
    size    int64 [G, 2]  (h, w) of the region in pixels (0×0 for an empty mask)
    total   int64 [G]     mask pixels of the instance (the whole mask, as the official MOB uses)
    image_size            (H, W) of the frame the masks live in
    affine  float [4] | None   (ax, bx, ay, by): query x -> ax·x + bx, y -> ay·y + by, applied
                               before rounding; ax < 0 is a horizontal flip
    window  int64 [4] | None   (x1, y1, x2, y2) part of the frame that is counted; also the
                               region `areas()` counts over
    (`assigners.batch.concat_integrals` of several images' instances makes them per instance, [G, 4].)
    """

    data: Tensor
    offset: Tensor
    origin: Tensor
    size: Tensor
    total: Tensor
    image_size: tuple[int, int]
    affine: Tensor | None = None
    window: Tensor | None = None

    # --- construction ---------------------------------------------------------------------
    @staticmethod
    def from_masks(masks: Tensor) -> "MaskIntegrals":
        """bool [G, H, W] -> MaskIntegrals (regions = tight pixel box of each mask)."""
        if masks.dim() != 3:
            raise ValueError(f"masks must be [G, H, W], got shape {tuple(masks.shape)}")
        if masks.dtype != torch.bool:
            raise ValueError(f"masks must be bool, got {masks.dtype}")
        g, h, w = masks.shape
        dev = masks.device
        pixels = masks.view(torch.uint8)  # same layout as bool; uint8 max-reductions are fast
        y0, y1 = _span(pixels.amax(2) > 0)  # [G] each: first row, one past the last row
        x0, x1 = _span(pixels.amax(1) > 0)
        bounds = torch.stack([y0, y1, x0, x1], 1).tolist()  # [G, 4]; the one host sync
        sizes = [(max(b - a, 0), max(d - c, 0)) for a, b, c, d in bounds]
        lengths = [(rh + 1) * (rw + 1) for rh, rw in sizes]
        starts = list(accumulate(lengths, initial=0))[:-1]
        data = torch.zeros(sum(lengths), dtype=torch.int32, device=dev)
        for i, ((a, b, c, d), (rh, rw)) in enumerate(zip(bounds, sizes)):
            if rh == 0:  # empty mask: a 1×1 zero region at the origin
                continue
            row_dtype = torch.int16 if rw < _INT16_ROW_LIMIT else torch.int32
            region = data[starts[i]:starts[i] + lengths[i]].view(rh + 1, rw + 1)  # [h+1, w+1]
            region[1:, 1:] = pixels[i, a:b, c:d].cumsum(1, dtype=row_dtype).cumsum(0, dtype=torch.int32)
        origins = [(a, c) if rh else (0, 0) for (a, _, c, _), (rh, _) in zip(bounds, sizes)]
        return MaskIntegrals._assemble(data, origins, sizes, starts, (h, w))

    @staticmethod
    def from_full(integral: Tensor) -> "MaskIntegrals":
        """Wrap full integral images int [G, H+1, W+1] (region = whole image), without a copy."""
        if integral.dim() != 3:
            raise ValueError(f"integral must be [G, H+1, W+1], got shape {tuple(integral.shape)}")
        if integral.dtype.is_floating_point or integral.dtype == torch.bool:
            raise ValueError(f"integral must hold integer counts, got {integral.dtype}")
        g, hp1, wp1 = integral.shape
        dev = integral.device
        data = integral.reshape(-1)  # [G·(H+1)·(W+1)]
        return MaskIntegrals(
            data=data,
            offset=torch.arange(g, device=dev, dtype=torch.int64) * (hp1 * wp1),
            origin=torch.zeros((g, 2), dtype=torch.int64, device=dev),
            size=torch.tensor([hp1 - 1, wp1 - 1], dtype=torch.int64, device=dev).expand(g, 2),  # [G, 2]
            total=integral[:, -1, -1].to(torch.int64),
            image_size=(hp1 - 1, wp1 - 1),
        ).prepared()

    @staticmethod
    def from_regions(regions: list[Tensor], origins: list[tuple[int, int]], image_size: tuple[int, int],
                     device: torch.device | str | None = None) -> "MaskIntegrals":
        """Assemble from per-instance region integrals (int32 [h+1, w+1], zero first row/column)."""
        device = torch.device(device) if device is not None else (
            regions[0].device if regions else torch.device("cpu"))
        sizes = [(int(r.shape[0]) - 1, int(r.shape[1]) - 1) for r in regions]
        starts = list(accumulate((r.numel() for r in regions), initial=0))[:-1]
        data = (torch.cat([r.reshape(-1).to(device, torch.int32) for r in regions]) if regions  # [Σ (h+1)(w+1)]
                else torch.zeros(0, dtype=torch.int32, device=device))
        return MaskIntegrals._assemble(data, [tuple(o) for o in origins], sizes, starts, image_size)

    @staticmethod
    def _assemble(data: Tensor, origins: list[tuple[int, int]], sizes: list[tuple[int, int]],
                  starts: list[int], image_size: tuple[int, int]) -> "MaskIntegrals":
        """The instance table and lookup tables from host-side region lists, in two transfers."""
        dev = data.device
        meta = torch.tensor([[y0, x0, rh, rw, st, st + (rh + 1) * (rw + 1) - 1]
                             for (y0, x0), (rh, rw), st in zip(origins, sizes, starts)],
                            dtype=torch.int64).reshape(-1, 6).to(dev)  # [G, 6]
        out = MaskIntegrals(data=data, offset=meta[:, 4], origin=meta[:, 0:2], size=meta[:, 2:4],
                            total=data[meta[:, 5]].to(torch.int64),
                            image_size=(int(image_size[0]), int(image_size[1])))
        rows = []
        for (y0, x0), (rh, rw), st in zip(origins, sizes, starts):
            corners = [c * k for row, k in zip(_PICK, (1, rw + 1, 1, rw + 1)) for c in row]
            rows.append([x0, y0, x0, y0, rw, rh, rw, rh, *corners, st, st, st, st])
        geo = torch.tensor(rows, dtype=torch.float64).reshape(-1, 28).to(dev)  # [G, 28]
        out.__dict__["_geometry"] = (geo[:, None, 0:4], geo[:, None, 4:8],  # [G, 1, 4] each
                                     geo[:, 8:24].view(-1, 4, 4), geo[:, None, 24:28])  # [G, 4, 4], [G, 1, 4]
        return out.prepared()

    # --- plumbing ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.offset.shape[0])

    @property
    def device(self) -> torch.device:
        return self.data.device

    def to(self, device: torch.device | str) -> "MaskIntegrals":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        moved = replace(self, data=move(self.data), offset=move(self.offset), origin=move(self.origin),
                        size=move(self.size), total=move(self.total), affine=move(self.affine),
                        window=move(self.window))
        return self._carry(moved, per_instance=move, shared=move)

    def select(self, index: Tensor) -> "MaskIntegrals":
        """Keep the instances `index` (bool [G] or int64 [G']), sharing the buffer."""
        kept = replace(self, offset=self.offset[index], origin=self.origin[index], size=self.size[index],
                       total=self.total[index])
        return self._carry(kept, per_instance=lambda t: t[index], shared=lambda t: t)

    def with_transform(self, affine: Tensor, window: Tensor) -> "MaskIntegrals":
        """Query boxes from another frame: x -> ax·x + bx, y -> ay·y + by; count inside `window`."""
        mapped = replace(self, affine=affine.to(self.device, torch.float32),
                         window=window.to(self.device, torch.int64))
        return self._carry(mapped, per_instance=lambda t: t, shared=lambda t: t)

    def prepared(self) -> "MaskIntegrals":
        """Build the lookup tables the counts use now (the constructors do it, in the data
        workers), so that an assignment step does not; `to`, `select` and pickling keep them."""
        self._geometry  # noqa: B018 (computes and caches)
        self._signs(torch.float32)
        self._signs(torch.float64)
        return self

    def _carry(self, other: "MaskIntegrals", per_instance, shared) -> "MaskIntegrals":
        """Give `other` (the same instances, moved or selected) this one's cached tables."""
        if "_geometry" in self.__dict__:
            other.__dict__["_geometry"] = tuple(per_instance(t) for t in self.__dict__["_geometry"])
        if "_signs_cache" in self.__dict__:
            other.__dict__["_signs_cache"] = {k: shared(v) for k, v in self.__dict__["_signs_cache"].items()}
        return other

    def full(self) -> Tensor:
        """The full-size integral images int32 [G, H+1, W+1] (tests and small images)."""
        h, w = self.image_size
        g = len(self)
        ys = torch.arange(h + 1, device=self.device).view(1, h + 1, 1).expand(g, h + 1, w + 1)  # [G, H+1, W+1]
        xs = torch.arange(w + 1, device=self.device).view(1, 1, w + 1).expand(g, h + 1, w + 1)  # [G, H+1, W+1]
        flat = self._lookup(ys.reshape(g, -1), xs.reshape(g, -1))  # [G, (H+1)·(W+1)]
        return flat.reshape(g, h + 1, w + 1).to(torch.int32)  # [G, H+1, W+1]

    # --- queries ----------------------------------------------------------------------------
    def count(self, boxes: Tensor) -> Tensor:
        """Mask pixels of instance g inside box k: boxes float [K, 4] or [G, K, 4] -> int64 [G, K]."""
        return self.count_as(boxes, torch.float64).long()

    def count_as(self, boxes: Tensor, dtype: torch.dtype) -> Tensor:
        """`count` as floating `dtype` [G, K] (what the overlaps divide with); exact while the
        counts fit the dtype's integers (float32: frames under 2^24 pixels)."""
        g = len(self)
        if boxes.dim() == 2:
            boxes = boxes.unsqueeze(0).expand(g, -1, -1)  # [G, K, 4]
        if boxes.dim() != 3 or boxes.shape[0] != g or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be [K, 4] or [{g}, K, 4], got shape {tuple(boxes.shape)}")
        if boxes.device != self.device:
            raise ValueError(f"boxes are on {boxes.device} but the integrals on {self.device}")
        return self._rect_sum(self._pixel_rects(boxes), dtype)

    def count_pairs_as(self, instance: Tensor, boxes: Tensor, dtype: torch.dtype) -> Tensor:
        """Mask pixels of instance[p] inside boxes[p]: int64 [P], float [P, 4] -> `dtype` [P]
        (sparse pairs, e.g. only the GT–anchor pairs whose boxes overlap)."""
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or instance.shape != boxes.shape[:1]:
            raise ValueError(f"boxes must be [P, 4] with instance [P], got shapes {tuple(boxes.shape)} and "
                             f"{tuple(instance.shape)}")
        if boxes.device != self.device or instance.device != self.device:
            raise ValueError(f"boxes are on {boxes.device}, instance on {instance.device}, integrals on {self.device}")
        if self.affine is not None and self.affine.dim() == 2:
            raise ValueError("per-instance transforms (concatenated images) are counted with count_as only")
        return self._rect_sum(self._pixel_rects(boxes[:, None, :]), dtype, instance)[:, 0]  # [P]

    def _pixel_rects(self, boxes: Tensor) -> Tensor:
        """Query boxes [..., 4] -> whole-pixel rectangles (float) in this frame, window applied."""
        if self.affine is not None:
            boxes = self._map(boxes)
        r = torch.round(boxes)  # half to even, as the official code
        if self.window is not None:  # count only inside the window (the region may be larger)
            win = self.window.to(torch.float64)  # [4] or per instance [G, 4]
            reps = (1,) * (win.dim() - 1) + (2,)
            lo, hi = win[..., :2].repeat(reps), win[..., 2:].repeat(reps)  # (x1, y1, x1, y1), (x2, y2, x2, y2)
            if win.dim() == 2:
                lo, hi = lo[:, None, :], hi[:, None, :]  # [G, 1, 4]
            r = torch.maximum(torch.minimum(r, hi), lo)
        return r

    def areas(self) -> Tensor:
        """|M| per instance (int64 [G]): all its pixels, or those inside `window` when set."""
        if self.window is None:
            return self.total
        # The window is already whole pixels of this frame: no mapping, rounding or clamping to do
        # (and no copy of self, which would drop the cached lookup tables).
        win = self.window.to(torch.float64).view(-1, 1, 4).expand(len(self), 1, 4)  # [G, 1, 4]
        return self._rect_sum(win, torch.float64)[:, 0].long()

    def area_scale(self) -> float | Tensor:
        """Pixels of this frame per unit area of the query frame (|ax·ay|, [] or per instance [G];
        1 without `affine`)."""
        if self.affine is None:
            return 1.0
        return (self.affine[..., 0] * self.affine[..., 2]).abs()

    # --- internals --------------------------------------------------------------------------
    def _map(self, boxes: Tensor) -> Tensor:
        affine = self.affine if self.affine.dim() == 1 else self.affine[:, None, :]  # [4] | [G, 1, 4]
        ax, bx, ay, by = affine.unbind(-1)
        xa, xb = boxes[..., 0] * ax + bx, boxes[..., 2] * ax + bx
        ya, yb = boxes[..., 1] * ay + by, boxes[..., 3] * ay + by
        return torch.stack([torch.minimum(xa, xb), torch.minimum(ya, yb),
                            torch.maximum(xa, xb), torch.maximum(ya, yb)], dim=-1)  # [G, K, 4]

    @cached_property
    def _geometry(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-instance region geometry for `_rect_sum`, float64 (exact integers up to 2^53):
        origin (x0, y0, x0, y0) [G, 1, 4]; size (w, h, w, h) [G, 1, 4]; `corners` [G, 4, 4] and
        `base` [G, 1, 4] such that local (x1, y1, x2, y2) @ corners + base is the buffer index of
        I[y1, x1], I[y1, x2], I[y2, x1], I[y2, x2]."""
        f64 = torch.float64
        yx0, hw = self.origin.to(f64), self.size.to(f64)  # [G, 2] each
        origin4 = yx0.flip(1).repeat(1, 2)[:, None, :]  # [G, 1, 4]
        size4 = hw.flip(1).repeat(1, 2)[:, None, :]  # [G, 1, 4]
        stride = hw[:, 1] + 1  # [G] row length of each region's integral
        pick = torch.tensor(_PICK, dtype=f64, device=self.device)  # [4 coords, 4 corners]
        scale = torch.stack([torch.ones_like(stride), stride, torch.ones_like(stride), stride], 1)  # [G, 4]
        corners = scale[:, :, None] * pick  # [G, 4, 4]
        base = self.offset.to(f64)[:, None, None].expand(-1, 1, 4)  # [G, 1, 4]
        return origin4, size4, corners, base

    def _rect_sum(self, r: Tensor, dtype: torch.dtype, instance: Tensor | None = None) -> Tensor:
        """Pixels in the half-open rectangles r = float [G, K, 4] (x1, y1, x2, y2) of whole pixel
        coordinates -> `dtype` [G, K]; with `instance` int64 [P], r is [P, K, 4], row p of
        instance[p].

        Clamping each corner to its instance's region is also the clamp to the image (the region
        lies inside it, and no mask pixel lies outside the region), so one clamp does both. The
        index arithmetic is one batched matmul and the corner sum one matmul: few, contiguous ops.
        """
        origin4, size4, corners, base = self._geometry
        if instance is not None:
            origin4, size4, corners, base = origin4[instance], size4[instance], corners[instance], base[instance]
        local = (r - origin4).clamp_(min=0)  # [G, K, 4] float64 region coordinates
        torch.minimum(local, size4, out=local)
        index = torch.baddbmm(base, local, corners).long()  # [G, K, 4 corners]
        values = torch.take(self.data, index).to(dtype)  # [G, K, 4]
        return values @ self._signs(dtype)  # I[y2,x2] − I[y1,x2] − I[y2,x1] + I[y1,x1]

    def _signs(self, dtype: torch.dtype) -> Tensor:
        """The corner signs as `dtype` [4] on this device, made once per instance and dtype."""
        cache = self.__dict__.setdefault("_signs_cache", {})
        if dtype not in cache:
            cache[dtype] = torch.tensor(_CORNER_SIGNS, dtype=dtype, device=self.device)
        return cache[dtype]

    def _lookup(self, y: Tensor, x: Tensor) -> Tensor:
        """I[g, y, x] for image coordinates y, x (int64 [G, K]) via each region's integral."""
        y0, x0 = self.origin[:, 0:1], self.origin[:, 1:2]  # [G, 1]
        h, w = self.size[:, 0:1], self.size[:, 1:2]  # [G, 1]
        ly = torch.minimum((y - y0).clamp(min=0), h)  # [G, K]
        lx = torch.minimum((x - x0).clamp(min=0), w)
        idx = self.offset[:, None] + ly * (w + 1) + lx  # [G, K]
        return self.data[idx].long()


def _span(occupied: Tensor) -> tuple[Tensor, Tensor]:
    """bool [G, L] -> (first occupied index, one past the last) int64 [G]; (L, 0) when none."""
    n = occupied.shape[1]
    pos = torch.arange(n, device=occupied.device)  # [L]
    first = torch.where(occupied, pos, n).amin(1) if n else occupied.new_zeros(occupied.shape[0], dtype=torch.int64)
    last = torch.where(occupied, pos + 1, 0).amax(1) if n else first
    return first, last


def as_mask_integrals(integral: "MaskIntegrals | Tensor") -> "MaskIntegrals":
    """Either accepted form (MaskIntegrals, or full int [G, H+1, W+1]) as a MaskIntegrals."""
    if isinstance(integral, MaskIntegrals):
        return integral
    if isinstance(integral, Tensor):
        return MaskIntegrals.from_full(integral)
    raise ValueError(f"integral must be a MaskIntegrals or an int tensor [G, H+1, W+1], got {type(integral).__name__}")

