"""The report's intervals end to end: runs in a real MLflow store with per-image artifacts."""
import csv
import io

import numpy as np
import pytest

from pipeline import tracking
from pipeline.config import Config, SweepConfig, TrackingConfig
from pipeline.eval import image_eval as IE
from pipeline.report.build import PER_IMAGE_ARTIFACT, build_report
from pipeline.report.figures import plot_mask_ap
from pipeline.sweep.grid import Cell, grid_cells
from pipeline.sweep.record import KIND_SWEEP, KIND_TAG, SWEEP_TAG, SweepRecord
from tests.fixtures.simulated_eval import simulated_eval

IMAGES = 300
# (scale, assigner) -> detector quality: at 128 maIoU is far better than IoU, at 96 they are equal
QUALITY = {(96, "atss_iou"): 0.6, (96, "atss_maiou"): 0.6, (128, "atss_iou"): 0.45, (128, "atss_maiou"): 0.9}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("intervals")
    tcfg = TrackingConfig(tracking_uri=tracking.sqlite_uri(tmp / "mlflow.db"), experiment="ci")
    cfg = Config(tracking=tcfg, sweep=SweepConfig(scales=(96, 128), assigners=("atss_iou", "atss_maiou"),
                                                  seeds=(0,), root=str(tmp / "sweeps"), bootstrap_resamples=300))
    parent = tracking.open_run(tcfg, run_name="sweep", tags={SWEEP_TAG: "ci", KIND_TAG: KIND_SWEEP})
    rng = np.random.default_rng(0)
    num_gt = rng.integers(1, 4, size=IMAGES)
    children = {}
    for (scale, assigner), q in QUALITY.items():
        cell = Cell(scale, assigner, 0)
        ev = {"segm": simulated_eval(rng, num_gt, q), "bbox": simulated_eval(rng, num_gt, q)}
        child = tracking.open_run(tcfg, run_name=cell.key, parent_run_id=parent.run_id,
                                  tags={**cell.tags(), tracking.CELL_KEY_TAG: cell.key})
        ones = np.ones((1, IMAGES))
        child.log_metrics({"segm/AP": IE.ap(ev["segm"], ones)[0], "bbox/AP": IE.ap(ev["bbox"], ones)[0],
                           "segm/oLRP": IE.olrp(ev["segm"], ones)[0]})
        child.log_artifact(IE.save(ev, tmp / cell.key / "per_image.npz"), PER_IMAGE_ARTIFACT.rsplit("/", 1)[0])
        child.finish()
        children[cell.key] = child
    record = SweepRecord(name="ci", preset="tiny", config=cfg.to_dict(),
                         cells=[c.to_dict() for c in grid_cells(cfg)], tracking_uri=tcfg.tracking_uri,
                         experiment=tcfg.experiment, parent_run_id=parent.run_id)
    return build_report(record, figures=False), children, tmp


def test_the_significant_winner_is_bold_and_the_tie_is_not(report):
    rep, _, _ = report
    rows = {(r.scale, r.assigner): r for r in rep.rows}
    win, tie = rows[(128, "atss_maiou")].deltas["segm/AP"], rows[(96, "atss_maiou")].deltas["segm/AP"]
    assert win.low > 0 and win.low < win.delta < win.high
    assert tie.low < 0 < tie.high
    assert rows[(128, "atss_maiou")].best and not any(r.best for k, r in rows.items() if k[0] == 96)
    md = rep.markdown
    assert "| Δ mask AP vs ATSS w. IoU [95 % CI] |" in md.splitlines()[0]
    assert f"| 128 | **ATSS w. maIoU** | 1 | **{rows[(128, 'atss_maiou')].mean['segm/AP']:.1f}** | " \
           f"{win.delta:+.1f} [{win.low:+.1f}, {win.high:+.1f}] |" in md
    assert "| 96 | ATSS w. IoU | 1 |" in md and "| baseline |" in md
    assert f"over the {IMAGES} validation images (300 resamples" in md
    assert "1 seed per row: the interval covers test-set sampling only, not training noise" in md
    assert "Significant at 95 %: S = 128: ATSS w. maIoU +" in md and "(and above every other row: bold)" in md


def test_csv_columns_and_the_baselines_own_row(report):
    rep, _, _ = report
    table = list(csv.DictReader(io.StringIO((rep.directory / "table.csv").read_text())))
    for prefix in ("mask_AP", "box_AP", "oLRP"):
        assert {f"{prefix}_delta", f"{prefix}_delta_ci95_low", f"{prefix}_delta_ci95_high"} <= set(table[0])
    base = next(t for t in table if t["scale"] == "128" and t["assigner"] == "atss_iou")
    assert (base["baseline"], base["mask_AP_delta"], base["mask_AP_delta_ci95_low"]) == ("ATSS w. IoU", "0.0", "")
    win = next(t for t in table if t["scale"] == "128" and t["assigner"] == "atss_maiou")
    assert float(win["mask_AP_delta_ci95_low"]) > 0 and float(win["oLRP_delta_ci95_high"]) < 0
    assert int(win["best"]) == 1


def test_each_child_run_carries_its_rows_interval(report):
    rep, children, _ = report
    got = children["s128-atss_maiou-seed0"].metrics()
    row = next(r for r in rep.rows if (r.scale, r.assigner) == (128, "atss_maiou"))
    d = row.deltas["segm/AP"]
    assert (got["delta/segm_AP"], got["delta/segm_AP_ci95_low"], got["delta/segm_AP_ci95_high"]) == \
        pytest.approx((d.delta, d.low, d.high))
    assert {"delta/bbox_AP_ci95_low", "delta/segm_oLRP_ci95_high"} <= set(got)
    assert "delta/segm_AP" not in children["s128-atss_iou-seed0"].metrics()  # the baseline itself


def test_the_figure_draws_the_intervals(report):
    rep, _, tmp = report
    path = plot_mask_ap(rep.rows, tmp / "mask_ap.png")
    assert path is not None and path.stat().st_size > 0
    from pipeline.report.figures import _error_bars

    panel = [r for r in rep.rows if r.scale == 96]
    bars = _error_bars(panel)  # [2, N]: what matplotlib draws below and above each bar
    for r, below, above in zip(panel, *bars):
        low, high = r.spread["segm/AP"]
        assert low < r.mean["segm/AP"] < high
        assert (below, above) == pytest.approx((r.mean["segm/AP"] - low, high - r.mean["segm/AP"]))
