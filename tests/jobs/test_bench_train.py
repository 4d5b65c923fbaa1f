"""`jobs.bench_train --table3` trains one step per row, brute force included, and prints the table."""
import pytest

from jobs import bench_train


@pytest.mark.slow
def test_table3_times_every_row_and_the_brute_force_speed_up(tmp_path, capsys):
    small = ["model.backbone=resnet18", "model.fpn_channels=16", "model.num_protos=4", "data.scale=64",
             "data.synthetic_size=64", "data.synthetic_train_images=4", "data.synthetic_val_images=2",
             f"data.synthetic_dir={tmp_path}", "train.batch_size=2"]
    args = ["--table3", "--iters", "1", "--warmup", "0", "--threads", "1"]
    assert bench_train.main(args + [a for s in small for a in ("--set", s)]) == 0
    out = capsys.readouterr().out
    for label in ("fixed IoU threshold", "ATSS w. IoU", "ATSS w. maIoU (brute force)", "ATSS w. GmaIoU"):
        assert label in out
    assert "brute force / integral images:" in out and "on the assignment" in out
    assert "YOLACT-64 resnet18, batch 2" in out
