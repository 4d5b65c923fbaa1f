"""The assignment benchmark runs end to end on a small image (its numbers live in docs/)."""
from jobs import bench_assign


def test_bench_runs_and_brute_force_agrees(capsys):
    assert bench_assign.main(["--size", "64", "--gts", "1", "3", "--repeats", "1", "--warmup", "0",
                              "--devices", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "in 4/4 cases" in out  # brute force == integral images, 2 grids × 2 G
    for name in ("fixed_iou", "atss_iou", "atss_giou", "atss_diou", "atss_maiou", "atss_gmaiou"):
        assert f"| {name} |" in out


def test_batch_form_benchmark_runs_and_agrees_with_the_loop(capsys):
    assert bench_assign.main(["--size", "64", "--gts", "0", "3", "--repeats", "1", "--warmup", "0",
                              "--batch", "3"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 0 ") or line.startswith("| 3 ")]
    assert len(rows) == 2 * 6 and all(row.endswith("| True |") for row in rows)
