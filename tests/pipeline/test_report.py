"""The Table-2 report on hand-made MLflow runs in a real local sqlite store."""
import csv
import io
import math
from dataclasses import replace

import pytest

from pipeline import tracking
from pipeline.config import Config, SweepConfig, TrackingConfig
from pipeline.report.build import build_report
from pipeline.report.table import COLUMNS, summarise, to_markdown
from pipeline.sweep.grid import Cell, grid_cells
from pipeline.sweep.record import KIND_SWEEP, KIND_TAG, SWEEP_TAG, SweepRecord
from pipeline.sweep.results import CellResult, collect
from pipeline.train.phases import phase_times

# (scale, assigner, seed) -> mask AP; the other metrics are derived from it below.
MASK_AP = {
    (192, "atss_iou", 0): 10.0, (192, "atss_iou", 1): 12.0, (192, "atss_iou", 2): 14.0,
    (192, "atss_maiou", 0): 13.0, (192, "atss_maiou", 1): 13.0, (192, "atss_maiou", 2): 16.0,
    (256, "atss_iou", 0): 20.0, (256, "atss_iou", 1): 21.0, (256, "atss_iou", 2): 22.0,
    (256, "atss_maiou", 0): 19.0, (256, "atss_maiou", 1): 20.0, (256, "atss_maiou", 2): 21.0,
}


def _metrics(ap: float, scale: int) -> dict[str, float]:
    m = {c.metric: ap + i for i, c in enumerate(COLUMNS)}
    m["num_anchors"] = float(scale * 10)
    return m


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One store for the module (creating an MLflow DB is the slow part); tests only add runs
    that are not FINISHED, which the report ignores."""
    tmp_path = tmp_path_factory.mktemp("report")
    tcfg = TrackingConfig(tracking_uri=tracking.sqlite_uri(tmp_path / "mlflow.db"), experiment="rep")
    cfg = Config(tracking=tcfg, sweep=SweepConfig(scales=(192, 256), assigners=("atss_iou", "atss_maiou"),
                                                  seeds=(0, 1, 2), root=str(tmp_path / "sweeps")))
    parent = tracking.open_run(tcfg, run_name="sweep", tags={SWEEP_TAG: "t", KIND_TAG: KIND_SWEEP})
    for (scale, assigner, seed), ap in MASK_AP.items():
        cell = Cell(scale, assigner, seed)
        child = tracking.open_run(tcfg, run_name=cell.key, parent_run_id=parent.run_id,
                                  tags={**cell.tags(), tracking.CELL_KEY_TAG: cell.key})
        child.log_metrics(_metrics(ap, scale))
        child.finish()
    record = SweepRecord(name="t", preset="tiny", config=cfg.to_dict(),
                         cells=[c.to_dict() for c in grid_cells(cfg)], tracking_uri=tcfg.tracking_uri,
                         experiment=tcfg.experiment, parent_run_id=parent.run_id)
    return record, tcfg, parent


def _rows_by_key(rows):
    return {(r.scale, r.assigner): r for r in rows}


def test_mean_std_and_best_per_scale(sweep):
    record, tcfg, parent = sweep
    report = build_report(record, figures=False)
    rows = _rows_by_key(report.rows)
    assert list(rows) == [(192, "atss_iou"), (192, "atss_maiou"), (256, "atss_iou"), (256, "atss_maiou")]
    r = rows[(192, "atss_maiou")]
    assert r.n == 3
    assert r.mean["segm/AP"] == pytest.approx(14.0)
    assert r.std["segm/AP"] == pytest.approx(math.sqrt(((13 - 14) ** 2 * 2 + (16 - 14) ** 2) / 2))
    assert r.mean["bbox/AP"] == pytest.approx(14.0 + 7)  # column offset of bbox/AP in _metrics
    assert rows[(192, "atss_iou")].std["segm/AP"] == pytest.approx(2.0)
    # leading by mean mask AP: maIoU at 192 (14 > 12), IoU at 256 (21 > 20)
    assert [k for k, r in rows.items() if r.leading] == [(192, "atss_maiou"), (256, "atss_iou")]
    # these hand-made runs logged no per-image evaluation: no interval, so nothing is best
    assert not any(r.best for r in rows.values())
    assert rows[(192, "atss_maiou")].deltas["segm/AP"].delta == pytest.approx(2.0)
    assert "without an interval" in report.markdown and "nothing is marked best" in report.markdown
    assert report.missing == []


def test_markdown_and_csv_on_disk(sweep):
    record, tcfg, parent = sweep
    report = build_report(record, figures=False)
    md = (report.directory / "table.md").read_text()
    lines = md.splitlines()
    assert lines[0].startswith("| scale | assigner | seeds | mask AP ↑ |")
    assert "oLRP ↓" in lines[0]
    body = [ln for ln in lines[2:] if ln.startswith("|")]
    assert len(body) == 4
    cells = [c.strip() for c in body[1].strip("|").split("|")]
    assert cells[:5] == ["192", "ATSS w. maIoU", "3", "14.0 ± 1.7", "+2.0"]  # no interval: no bold
    assert "| Δ mask AP vs ATSS w. IoU [95 % CI] |" in lines[0]
    assert [c.strip() for c in body[0].strip("|").split("|")][1] == "ATSS w. IoU"
    assert cells[-2] == "1920"  # #anchors: integer column, no std (all seeds equal -> std 0)
    table = list(csv.DictReader(io.StringIO((report.directory / "table.csv").read_text())))
    assert [(int(t["scale"]), t["assigner"], int(t["best"])) for t in table] == [
        (192, "atss_iou", 0), (192, "atss_maiou", 0), (256, "atss_iou", 0), (256, "atss_maiou", 0)]
    assert {t["baseline"] for t in table} == {"ATSS w. IoU"}
    assert (table[0]["mask_AP_delta"], table[0]["mask_AP_delta_ci95_low"]) == ("0.0", "")  # the baseline
    assert float(table[1]["mask_AP_delta"]) == pytest.approx(2.0) and table[1]["mask_AP_delta_ci95_high"] == ""
    assert float(table[0]["segm/AP_mean"]) == pytest.approx(12.0)
    assert float(table[0]["segm/AP_std"]) == pytest.approx(2.0)


def test_report_is_logged_to_the_parent_run(sweep):
    record, tcfg, parent = sweep
    build_report(record, figures=False)
    client = parent.client
    names = {a.path for a in client.list_artifacts(parent.run_id, "report")}
    assert {"report/table.md", "report/table.csv"} <= names
    assert parent.metrics()["report/cells_finished"] == 12


def test_unfinished_and_missing_cells(sweep):
    record, tcfg, parent = sweep
    # a crashed (FAILED) rerun of a finished cell and a RUNNING orphan must not count
    for status, key in (("FAILED", Cell(192, "atss_iou", 0)), ("RUNNING", Cell(256, "atss_iou", 1))):
        run = tracking.open_run(tcfg, run_name=key.key, parent_run_id=parent.run_id, tags=key.tags())
        run.log_metrics({"segm/AP": 99.0})
        if status == "FAILED":
            run.finish("FAILED")
    record = replace(record, cells=record.cells + [Cell(320, "atss_iou", 0).to_dict()])
    report = build_report(record, figures=False)
    rows = _rows_by_key(report.rows)
    assert rows[(192, "atss_iou")].mean["segm/AP"] == pytest.approx(12.0)
    assert rows[(320, "atss_iou")].n == 0 and not rows[(320, "atss_iou")].best
    assert report.missing == ["s320-atss_iou-seed0"]
    assert "| 320 | ATSS w. IoU | 0 | – |" in report.markdown


def test_single_seed_has_no_std_and_variants_use_model_column():
    cells = [Cell(550, "fixed_iou", 0, "yolact"), Cell(550, "atss_maiou", 0, "atss_maiou")]
    results = [CellResult(cells[0], "a", {"segm/AP": 28.5, "fps": 27.0}),
               CellResult(cells[1], "b", {"segm/AP": 30.4, "fps": float("nan")})]
    rows = summarise(results, cells)
    assert [r.label for r in rows] == ["YOLACT · fixed IoU threshold", "+ ATSS w. maIoU · ATSS w. maIoU"]
    assert rows[0].std == {} and rows[1].leading and not rows[0].leading
    assert "fps" not in rows[1].mean  # NaN is not averaged in; shown as missing
    md = to_markdown(rows)
    assert md.splitlines()[0].startswith("| scale | model | assigner | seeds |")
    assert "| 550 | + ATSS w. maIoU | ATSS w. maIoU | 1 | 30.4 |" in md  # leading, but not shown best without an interval


def test_the_table_states_what_fps_measured():
    cells = [Cell(96, "atss_iou", 0), Cell(96, "atss_maiou", 0)]
    setup = "cpu (1 threads), bf16-autocast, channels-last, batch 1, model + post-processing"
    same = [CellResult(c, str(i), {"segm/AP": 1.0, "fps": 9.0}, setup) for i, c in enumerate(cells)]
    assert f"fps: {setup}; each cell timed alone after all trials" in to_markdown(summarise(same, cells))
    mixed = [same[0], CellResult(cells[1], "x", {"segm/AP": 1.0, "fps": 20.0}, setup.replace("bf16-autocast", "fp32"))]
    assert "fps measured differently across cells (not comparable)" in to_markdown(summarise(mixed, cells))
    untimed = [CellResult(c, str(i), {"segm/AP": 1.0}) for i, c in enumerate(cells)]
    assert "fps: not measured." in to_markdown(summarise(untimed, cells))


def test_the_table_says_where_the_cells_time_went():
    cells = [Cell(96, "atss_iou", 0), Cell(96, "atss_maiou", 0), Cell(128, "atss_iou", 0)]
    times = [(100.0, 80.0, 5.0, 1.0), (200.0, 150.0, 6.0, 2.0), (400.0, 340.0, 8.0, 4.0)]  # cell, train, eval, log
    worker = [{"time/training": train, "time/evaluation": ev} for _, train, ev, _ in times]
    results = [CellResult(c, str(i), {"segm/AP": 1.0, **w, **phase_times(cell, log, w)})
               for i, (c, w, (cell, _, _, log)) in enumerate(zip(cells, worker, times))]
    # medians: cell 200, training 150, start-up median(14, 42, 48) = 42, overhead median(.2, .25, .15) = 20 %
    assert ("time per cell (median of 3): 200 s, of which training 150 s; start-up 42 s, final evaluation "
            "6 s, logging 2 s: 20 % of a cell's wall time is not training.") in to_markdown(summarise(results, cells))
    untimed = [CellResult(c, str(i), {"segm/AP": 1.0}) for i, c in enumerate(cells)]
    assert "time per cell" not in to_markdown(summarise(untimed, cells))


def test_collect_keeps_newest_finished_run_per_cell():
    class Run:
        def __init__(self, rid, start, ap, status="FINISHED"):
            self.info = type("I", (), {"run_id": rid, "start_time": start, "status": status})
            self.data = type("D", (), {"tags": Cell(192, "atss_iou", 0).tags(), "metrics": {"segm/AP": ap}})
    results = collect([Run("old", 1, 1.0), Run("new", 2, 2.0), Run("crash", 3, 3.0, "FAILED")])
    assert [(r.run_id, r.metrics["segm/AP"]) for r in results] == [("new", 2.0)]


def test_coco_undefined_metrics_and_all_tied_scales():
    """-1 (COCOeval's 'no GT in this area range') is n/a, never averaged; a full tie marks no best."""
    cells = [Cell(128, "atss_iou", 0), Cell(128, "atss_iou", 1), Cell(128, "atss_maiou", 0)]
    results = [CellResult(cells[0], "a", {"segm/AP": 0.0, "segm/APL": -1.0, "segm/APS": 2.0}),
               CellResult(cells[1], "b", {"segm/AP": 0.0, "segm/APL": 4.0, "segm/APS": 4.0}),
               CellResult(cells[2], "c", {"segm/AP": 0.0, "segm/APL": -1.0})]
    rows = summarise(results, cells)
    assert rows[0].mean["segm/APL"] == pytest.approx(4.0) and "segm/APL" not in rows[0].std
    assert rows[0].mean["segm/APS"] == pytest.approx(3.0)
    assert "segm/APL" not in rows[1].mean
    assert not any(r.leading for r in rows)
    line = [ln for ln in to_markdown(rows).splitlines() if "ATSS w. maIoU" in ln][0]
    cols = [c.strip() for c in line.strip("|").split("|")]
    # +1: the Δ column that follows mask AP
    assert cols[3] == "0.0" and cols[3 + 1 + [c.metric for c in COLUMNS].index("segm/APL")] == "n/a"


def test_best_is_judged_at_the_shown_precision():
    cells = [Cell(256, "atss_iou", 0), Cell(256, "atss_maiou", 0), Cell(320, "atss_iou", 0),
             Cell(320, "atss_maiou", 0)]
    aps = [0.04, 0.01, 20.04, 20.12]  # 256: both show 0.0 -> no best; 320: 20.0 < 20.1
    rows = summarise([CellResult(c, str(i), {"segm/AP": ap}) for i, (c, ap) in enumerate(zip(cells, aps))], cells)
    assert [r.leading for r in rows] == [False, False, False, True]
