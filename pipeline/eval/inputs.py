"""What `jobs.predict` reads and writes besides the model: images (pillow) and video (PyAV).

`list_inputs(spec)` turns what the user typed into a `PredictInputs`:
- a video file (by suffix) -> its path;
- an image file, a folder (its files, not recursive) or a glob pattern -> image paths, sorted.
Files that are not images by suffix are `skipped` with the reason; a folder or glob with no image
at all, or a path that does not exist, is a `ValueError` before any work starts. Whether an image
decodes is found out when it is read (`read_image`): one bad file must not stop the good ones.

Image ids in the COCO results: the file's stem when it is a number (COCO's own file names,
`000000000139.jpg` -> 139, which a test-dev submission needs), else the position in the sorted
list (+1, COCO ids start at 1). Frames of a video are numbered from 1 in decoding order.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.data.coco import load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
GLOB_CHARS = "*?["
VIDEO_CODEC = "mpeg4"  # in every FFmpeg build PyAV ships (libx264 is not always there)
VIDEO_PIXEL_FORMAT = "yuv420p"
DEFAULT_FPS = 25  # a video stream without a frame rate is written at this one


@dataclass
class PredictInputs:
    images: list[Path] = field(default_factory=list)
    video: Path | None = None
    skipped: list[str] = field(default_factory=list)  # "path: why" for files not read


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_inputs(spec: str | os.PathLike) -> PredictInputs:
    """The images or the video named by `spec` (see the module docstring)."""
    text = os.path.expanduser(str(spec))
    path = Path(text)
    if any(c in text for c in GLOB_CHARS) and not path.exists():
        files = [Path(p) for p in sorted(glob.glob(text)) if os.path.isfile(p)]
        where = f"glob {text!r}"
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        where = f"folder {path}"
    elif path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return PredictInputs(video=path)
        if not _is_image(path):
            raise ValueError(f"{path} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video "
                             f"({', '.join(VIDEO_SUFFIXES)})")
        return PredictInputs(images=[path])
    else:
        raise ValueError(f"input {text} does not exist (give an image, a folder, a glob or a video)")
    images = [p for p in files if _is_image(p)]
    skipped = [f"{p}: not an image (suffix {p.suffix or 'none'})" for p in files if not _is_image(p)]
    if not images:
        found = f"{len(files)} other file(s)" if files else "nothing"
        raise ValueError(f"{where} holds no image ({', '.join(IMAGE_SUFFIXES)}): found {found}")
    return PredictInputs(images=images, skipped=skipped)


def image_ids(paths: list[Path]) -> list[int]:
    """COCO image ids: numeric stems when every stem is a distinct number, else 1..N."""
    stems = [p.stem for p in paths]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(paths) + 1))


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 [H, W, 3]; a `ValueError` naming the file when it does not decode."""
    return load_image(str(path))


def read_video(path: Path) -> tuple[Iterator[np.ndarray], Fraction, int]:
    """(frames as RGB uint8 [H, W, 3], frame rate, frame count or 0 when the container does not say)."""
    import av  # only video needs it

    try:
        container = av.open(str(path))
        stream = container.streams.video[0]
    except (av.FFmpegError, IndexError) as e:
        raise ValueError(f"video {path}: cannot open ({e or 'no video stream'})") from None
    rate = stream.average_rate or Fraction(DEFAULT_FPS)

    def frames() -> Iterator[np.ndarray]:
        with container:
            try:
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="rgb24")
            except av.FFmpegError as e:
                raise ValueError(f"video {path}: cannot decode ({e})") from None

    return frames(), Fraction(rate), int(stream.frames or 0)


class VideoWriter:
    """Frames (RGB uint8 [H, W, 3], all of one size) into a video file; use as a context manager."""

    def __init__(self, path: Path, rate: Fraction):
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.rate = rate
        self.stream = None

    def write(self, frame: np.ndarray) -> None:
        import av

        if self.stream is None:
            self.stream = self.container.add_stream(VIDEO_CODEC, rate=self.rate)
            # yuv420p subsamples chroma 2×2: the encoder needs even sides
            self.stream.height, self.stream.width = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
            self.stream.pix_fmt = VIDEO_PIXEL_FORMAT
        even = np.ascontiguousarray(frame[:self.stream.height, :self.stream.width])
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(even, format="rgb24")):
            self.container.mux(packet)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():  # flush the encoder
                self.container.mux(packet)
        self.container.close()
