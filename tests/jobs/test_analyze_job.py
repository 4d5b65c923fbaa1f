import json

from jobs import analyze
from pipeline.data.synthetic import generate
from tests.pipeline.fixtures_data import write_tables_without_ray


def test_analyze_job_writes_pngs(tmp_path, capsys):
    generate(str(tmp_path / "d"), 3, 1, 64, seed=0, workers=1, progress=False)
    write_tables_without_ray(str(tmp_path / "d/annotations/train.json"), str(tmp_path / "d/images"),
                             tmp_path / "d/parquet/train")
    assert analyze.main(["--data", str(tmp_path / "d"), "--out", str(tmp_path / "figs"), "--scale", "64"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["instances"] > 0
    assert (tmp_path / "figs" / "mob.png").exists() and (tmp_path / "figs" / "iou_vs_maiou.png").exists()


def test_analyze_job_bad_parquet(tmp_path, capsys):
    (tmp_path / "pq").mkdir()
    (tmp_path / "pq" / "_manifest.json").write_text("{}")
    assert analyze.main(["--data", str(tmp_path), "--parquet", str(tmp_path / "pq"), "--out", str(tmp_path)]) == 2
    assert "jobs.precompute" in capsys.readouterr().err
