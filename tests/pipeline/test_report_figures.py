"""The report's figures on a small built-in synthetic dataset."""
from dataclasses import replace

import numpy as np
import pytest

from pipeline.config import Config, DataConfig, SweepConfig
from pipeline.data.synthetic import ensure_synthetic
from pipeline.report.figures import make_figures, plot_mask_ap, scan_validation
from pipeline.report.table import summarise
from pipeline.sweep.grid import Cell, grid_cells
from pipeline.sweep.record import SweepRecord
from pipeline.sweep.results import CellResult

SCALE = 128
PNG_MAGIC = b"\x89PNG"


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs")
    data = DataConfig(synthetic_dir=str(root / "synthetic"), synthetic_train_images=2,
                      synthetic_val_images=6, synthetic_size=SCALE, loader_workers=0)
    cfg = Config(data=data, sweep=SweepConfig(scales=(96, SCALE), assigners=("atss_iou", "atss_maiou"),
                                              root=str(root / "sweeps")))
    ensure_synthetic(cfg.data)
    return cfg


def _record(cfg: Config) -> SweepRecord:
    return SweepRecord(name="f", preset="tiny", config=cfg.to_dict(),
                       cells=[c.to_dict() for c in grid_cells(cfg)], tracking_uri="sqlite:////unused.db",
                       experiment="e")


def test_scan_matches_the_assigners_on_every_candidate(cfg):
    mob, labels, iou, maiou, images, names = scan_validation(cfg, SCALE)
    assert len(mob) == len(labels) == sum(len(im.boxes) for im in images) > 0  # 6 images < CANDIDATES
    assert ((mob > 0) & (mob <= 1.0 + 1e-6)).all()
    assert len(iou) == len(maiou) > 0 and (iou > 0).all() and (maiou >= 0).all()
    assert set(labels.tolist()) <= set(range(len(names)))
    for im in images:
        for pos in (im.pos_a, im.pos_b):  # ATSS: positive anchor centres lie inside a GT box
            centres = (im.anchors[pos, :2] + im.anchors[pos, 2:]) / 2  # [P, 2]
            inside = ((centres[:, None, :] > im.boxes[None, :, :2]) &
                      (centres[:, None, :] < im.boxes[None, :, 2:])).all(-1).any(-1)  # [P]
            assert inside.all()
        assert im.differing == int(np.logical_xor(im.pos_a, im.pos_b).sum())
        assert im.image.dtype == np.uint8 and im.image.shape == (SCALE, SCALE, 3)


def test_make_figures_writes_all_pngs(cfg, tmp_path):
    cells = grid_cells(cfg)
    rows = summarise([CellResult(c, str(i), {"segm/AP": 10.0 + i}) for i, c in enumerate(cells)], cells)
    made = make_figures(_record(cfg), rows, tmp_path)
    assert sorted(p.name for p in made) == ["anchors.png", "iou_vs_maiou.png", "mask_ap.png", "mob.png"]
    assert all(p.read_bytes()[:4] == PNG_MAGIC for p in made)


def test_missing_dataset_skips_only_the_dataset_figures(cfg, tmp_path, capsys):
    gone = replace(cfg, data=replace(cfg.data, data_dir=str(tmp_path / "no-such-dataset")))
    rows = summarise([CellResult(Cell(96, "atss_iou", 0), "a", {"segm/AP": 1.0})], [Cell(96, "atss_iou", 0)])
    made = make_figures(_record(gone), rows, tmp_path)
    assert [p.name for p in made] == ["mask_ap.png"]
    assert "dataset figures skipped" in capsys.readouterr().out


def test_mask_ap_plot_needs_a_mask_ap(tmp_path):
    rows = summarise([CellResult(Cell(96, "atss_iou", 0), "a", {"fps": 3.0})], [Cell(96, "atss_iou", 0)])
    assert plot_mask_ap(rows, tmp_path / "x.png") is None


def test_the_fig1_pair_is_any_two_assigners_of_one_grid(cfg):
    from pipeline.report.figures import figure_pair

    sw = cfg.sweep
    assert figure_pair(replace(sw, assigners=("atss_iou", "atss_maiou"))) == ("atss_iou", "atss_maiou")
    assert figure_pair(replace(sw, assigners=("atss_iou", "atss_gmaiou"))) == ("atss_iou", "atss_gmaiou")
    assert figure_pair(replace(sw, figure_assigners=("atss_giou", "atss_gmaiou"))) == ("atss_giou", "atss_gmaiou")
    with pytest.raises(ValueError, match="different anchor grids"):
        figure_pair(replace(sw, figure_assigners=("fixed_iou", "atss_maiou")))
    gmaiou = replace(cfg, sweep=replace(sw, figure_assigners=("atss_iou", "atss_gmaiou")))
    import torch

    from assigners import ASSIGNERS
    from pipeline.report.anchor_grids import input_anchors

    anchors, counts = input_anchors("atss", SCALE)
    for im in scan_validation(gmaiou, SCALE)[4]:
        gt, masks = torch.from_numpy(im.boxes), torch.from_numpy(im.masks)
        assert np.array_equal(im.pos_b, (ASSIGNERS["atss_gmaiou"](gt, masks, anchors, counts) >= 0).numpy())
        assert np.array_equal(im.pos_a, (ASSIGNERS["atss_iou"](gt, None, anchors, counts) >= 0).numpy())
