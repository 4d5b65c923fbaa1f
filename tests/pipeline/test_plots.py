import numpy as np
import pytest
from PIL import Image

from pipeline.report.plots import plot_iou_vs_maiou, plot_mob_distribution


def test_mob_distribution_png(tmp_path):
    rng = np.random.default_rng(0)
    mob = rng.uniform(0, 1.1, 300)
    out = plot_mob_distribution(mob, str(tmp_path / "sub" / "mob.png"), labels=rng.integers(0, 3, 300),
                                names=["a", "b", "c"])
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300
    plot_mob_distribution(np.zeros(0), str(tmp_path / "empty.png"))  # no GT at all is fine
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_iou_vs_maiou_png(tmp_path):
    rng = np.random.default_rng(1)
    iou = rng.uniform(0, 1, 1000)
    out = plot_iou_vs_maiou(iou, np.clip(iou + rng.normal(0, 0.1, 1000), 0, 1), str(tmp_path / "j.png"))
    with Image.open(out) as im:
        assert im.format == "PNG"
    plot_iou_vs_maiou([], [], str(tmp_path / "none.png"))
    with pytest.raises(ValueError, match="same shape"):
        plot_iou_vs_maiou([0.1], [0.1, 0.2], str(tmp_path / "bad.png"))
