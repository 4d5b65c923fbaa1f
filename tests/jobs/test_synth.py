import json

from jobs import synth


def test_synth_cli_writes_dataset_and_prints_histogram(tmp_path, capsys):
    assert synth.main(["--out", str(tmp_path), "--images", "4", "--size", "64", "--seed", "1",
                       "--workers", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "MOB" in out and "ring" in out and "wrote 4 train + 1 val images" in out
    data = json.load(open(tmp_path / "annotations" / "train.json"))
    assert len(data["images"]) == 4 and [c["name"] for c in data["categories"]] == ["solid", "ring", "cross", "bar"]


def test_synth_cli_rejects_bad_size(tmp_path, capsys):
    assert synth.main(["--out", str(tmp_path), "--images", "1", "--size", "8", "--quiet"]) == 2
    assert "size >= 32" in capsys.readouterr().err


def test_synth_cli_reports_an_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert synth.main(["--out", str(blocker), "--images", "1", "--size", "32", "--quiet"]) == 2
    assert str(blocker) in capsys.readouterr().err
