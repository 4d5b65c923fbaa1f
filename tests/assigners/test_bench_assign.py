"""The assignment benchmark runs end to end on a small image (its numbers live in docs/)."""
import torch

from jobs import bench_assign


def test_grids_have_the_paper_sizes():
    anchors, counts = bench_assign.atss_grid(550)
    assert counts == [69**2, 35**2, 18**2, 9**2, 5**2] and anchors.shape == (6416, 4)
    assert anchors[0].tolist() == [-16, -16, 16, 16]  # 4·stride, centred at the cell corner (0, 0)
    anchors, counts = bench_assign.yolact_grid(550)
    assert sum(counts) == 19248 and anchors.shape == (19248, 4)
    w, h = anchors[:3, 2] - anchors[:3, 0], anchors[:3, 3] - anchors[:3, 1]
    torch.testing.assert_close(h / w, torch.tensor([0.5, 1.0, 2.0]))  # ratios h/w
    torch.testing.assert_close((w * h).sqrt(), torch.full((3,), 24.0))  # 3·8 at P3
    torch.testing.assert_close(anchors[1, :2] + anchors[1, 2:], torch.full((2,), 550 / 69))  # centre (0.5·s)


def test_bench_runs_and_brute_force_agrees(capsys):
    assert bench_assign.main(["--size", "64", "--gts", "1", "3", "--repeats", "1", "--warmup", "0",
                              "--devices", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "in 4/4 cases" in out  # brute force == integral images, 2 grids × 2 G
    for name in ("fixed_iou", "atss_iou", "atss_giou", "atss_diou", "atss_maiou", "atss_gmaiou"):
        assert f"| {name} |" in out
