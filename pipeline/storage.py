"""Where runs keep their files: a local path or an object-store URI (`s3://bucket/prefix`, any
filesystem pyarrow knows). Ray Train writes checkpoints through pyarrow; an S3-compatible server
other than AWS is reached with the standard `AWS_ENDPOINT_URL` environment variable (plus the
usual `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), which pyarrow reads."""
from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs


def is_uri(location: str) -> bool:
    return "://" in location


def resolve_storage(location: str) -> str:
    """A URI as given; a path expanded (`~`) and absolute (never relative to a worker's cwd)."""
    return location if is_uri(location) else str(Path(location).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *parts]) if is_uri(location) else str(Path(location, *parts))


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a path or a URI."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())


def exists(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def write_text(location: str, text: str) -> None:
    fs, path = filesystem(location)
    fs.create_dir(path.rpartition("/")[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def location_of(fs: pafs.FileSystem, path: str) -> str:
    """The inverse of `filesystem`: a local path, or `<scheme>://<path>` (what Ray's checkpoints hold)."""
    return path if fs.type_name == "local" else f"{fs.type_name}://{path}"
