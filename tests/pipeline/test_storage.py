"""pipeline.storage: one set of calls for local paths and object-store URIs (the S3 side runs
against a real server in test_object_storage.py)."""
import os

import pyarrow.fs as pafs

from pipeline import storage


def test_paths_are_made_absolute_and_uris_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.resolve_storage("runs") == str(tmp_path / "runs")
    assert storage.resolve_storage("~/x") == os.path.expanduser("~/x")
    assert storage.resolve_storage("s3://b/runs") == "s3://b/runs"
    assert storage.join("s3://b/runs/", "name", "f") == "s3://b/runs/name/f"
    assert storage.join("/r", "name") == "/r/name"


def test_a_marker_round_trips_on_local_disk(tmp_path):
    marker = storage.join(str(tmp_path / "run"), "crash_injected_at_6")
    assert not storage.exists(marker)
    storage.write_text(marker, "t")  # creates the missing directory, as S3 needs none
    assert storage.exists(marker) and (tmp_path / "run" / "crash_injected_at_6").read_text() == "t"


def test_location_of_inverts_filesystem(tmp_path):
    fs, path = storage.filesystem(str(tmp_path))
    assert isinstance(fs, pafs.LocalFileSystem) and storage.location_of(fs, path) == str(tmp_path)
    s3 = pafs.S3FileSystem(anonymous=True, region="us-east-1")
    assert storage.location_of(s3, "bucket/runs/x") == "s3://bucket/runs/x"
