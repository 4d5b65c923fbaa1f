import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster (notes/ecosystem §8)

from jobs import precompute as job
from pipeline.data.instance_table import InstanceStore
from pipeline.data.synthetic import generate


def test_precompute_job_writes_both_splits_then_skips(tmp_path, capsys):
    generate(str(tmp_path / "data"), 6, 2, 64, seed=0, workers=1, progress=False)
    args = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "pq"), "--set", "data.parquet_images_per_shard=3",
            "--set", "data.precompute_workers=1", "--set", "data.skip_invalid=true", "--quiet"]
    assert job.main(args + ["--verify"]) == 0  # one Ray cluster serves both splits
    out = capsys.readouterr().out
    assert "train:" in out and "val:" in out and "verified" in out and "instances/s" in out
    assert "train: dropped: nothing" in out  # --skip-invalid reports what it dropped
    assert len(InstanceStore(str(tmp_path / "pq" / "train"))) > 0
    assert job.main(args + ["--splits", "train"]) == 0  # nothing left to do: Ray is not even started
    assert "2 already done" in capsys.readouterr().out


def test_precompute_job_reports_bad_input(tmp_path, capsys):
    assert job.main(["--data", str(tmp_path), "--quiet"]) == 2
    assert "annotation file not found" in capsys.readouterr().err


def test_precompute_job_checks_split_names_before_any_work(tmp_path, capsys):
    generate(str(tmp_path / "data"), 2, 1, 64, seed=0, workers=1, progress=False)
    assert job.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "pq"), "--splits", "train,test",
                     "--quiet"]) == 2
    assert "unknown split(s) ['test']" in capsys.readouterr().err
    assert not (tmp_path / "pq").exists()  # nothing was written for the valid split either
