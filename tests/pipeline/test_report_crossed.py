"""Model-option rows crossed with assigners: every cell its own report line, compared within its row."""
from dataclasses import replace

import numpy as np
import pytest

from pipeline.config import Config, SweepConfig
from pipeline.eval import image_eval as IE
from pipeline.report.compare import compare_rows
from pipeline.report.table import summarise, to_csv, to_markdown
from pipeline.report.uncertainty import METRICS, difference, image_weights, row_draws
from pipeline.sweep.grid import collapsed_rows, describe_grid, grid_cells
from pipeline.sweep.results import CellResult
from tests.fixtures.simulated_eval import simulated_eval

ASSIGNERS = ("fixed_iou", "atss_iou", "atss_maiou")
ROWS = ("sipmask", "yolact_pp")
IMAGES = 200
# (row, assigner) -> detector quality: maIoU is far better than IoU on the SipMask row only
QUALITY = {("sipmask", "fixed_iou"): 0.5, ("sipmask", "atss_iou"): 0.45, ("sipmask", "atss_maiou"): 0.9,
           ("yolact_pp", "fixed_iou"): 0.6, ("yolact_pp", "atss_iou"): 0.6, ("yolact_pp", "atss_maiou"): 0.6}


def _sweep(**kw) -> SweepConfig:
    return replace(SweepConfig(scales=(128,), assigners=ASSIGNERS, variants=ROWS, seeds=(0,),
                               bootstrap_resamples=200), **kw)


def test_head_rows_cross_with_every_assigner():
    cfg = replace(Config(), sweep=_sweep())
    cells = grid_cells(cfg)
    assert [(c.variant, c.assigner) for c in cells] == [(r, a) for a in ASSIGNERS for r in ROWS]
    assert len({c.row for c in cells}) == 6  # six report lines: no two assigners share one
    assert collapsed_rows(cfg) == []
    assert describe_grid(cfg).splitlines()[-1] == "6 cells (1 scales × 3 assigners × 2 rows × 1 seeds)"


def test_a_fixed_row_next_to_crossed_rows_is_said_aloud():
    cfg = replace(Config(), sweep=_sweep(variants=("yolact", "sipmask")))
    assert [(c.variant, c.assigner) for c in grid_cells(cfg)] == [
        ("yolact", "fixed_iou"), ("sipmask", "fixed_iou"), ("sipmask", "atss_iou"), ("sipmask", "atss_maiou")]
    text = describe_grid(cfg)
    assert "row 'yolact' fixes train.assigner=fixed_iou" in text
    assert text.splitlines()[-1] == "4 cells (1 scales × 3 assigners × 2 rows × 1 seeds = 6, less the collapsed rows above)"


@pytest.fixture(scope="module")
def compared():
    cfg = replace(Config(), sweep=_sweep())
    cells = grid_cells(cfg)
    rng = np.random.default_rng(0)
    num_gt = rng.integers(1, 4, size=IMAGES)
    evals, results = {}, []
    for i, c in enumerate(cells):
        q = QUALITY[(c.variant, c.assigner)]
        evals[c.key] = {"segm": simulated_eval(rng, num_gt, q), "bbox": simulated_eval(rng, num_gt, q)}
        ones = np.ones((1, IMAGES))
        results.append(CellResult(c, str(i), {"segm/AP": IE.ap(evals[c.key]["segm"], ones)[0],
                                              "bbox/AP": IE.ap(evals[c.key]["bbox"], ones)[0],
                                              "segm/oLRP": IE.olrp(evals[c.key]["segm"], ones)[0]}))
    rows = summarise(results, cells)
    note = compare_rows(rows, evals, cfg.sweep)
    return rows, note, evals, cfg.sweep


def test_each_line_is_compared_with_the_baseline_assigner_of_its_own_row(compared):
    rows, note, evals, sw = compared
    lines = {(r.variant, r.assigner): r for r in rows}
    assert len(lines) == 6 and all(r.n == 1 for r in rows)
    assert [r for r in rows if r.is_baseline] == [lines[("sipmask", "atss_iou")], lines[("yolact_pp", "atss_iou")]]
    # the paired difference on the scale's shared resamples, recomputed from the outcomes themselves
    weights = image_weights(IMAGES, sw.bootstrap_resamples, np.random.default_rng([sw.bootstrap_seed, 128]))
    for variant in ROWS:
        base = lines[(variant, "atss_iou")]
        for assigner in ("fixed_iou", "atss_maiou"):
            r = lines[(variant, assigner)]
            key = f"s128-{assigner}-{variant}-seed0"
            for m in METRICS:
                mine = row_draws({0: evals[key]}, m, weights)
                theirs = row_draws({0: evals[f"s128-atss_iou-{variant}-seed0"]}, m, weights)
                expect = difference(mine, theirs, r.mean[m.key] - base.mean[m.key])
                assert r.deltas[m.key] == expect
    win = lines[("sipmask", "atss_maiou")]
    assert win.deltas["segm/AP"].low > 0 and win.best
    assert not any(r.best for r in rows if r.variant == "yolact_pp")
    assert "S = 128, SipMask head: SipMask head · ATSS w. maIoU +" in note
    assert "difference from ATSS w. IoU of the same row at the same scale" in note


def test_markdown_and_csv_name_the_row_and_the_assigner_on_every_line(compared):
    rows, note, _, _ = compared
    md = to_markdown(rows, note).splitlines()
    assert md[0].startswith("| scale | model | assigner | seeds | mask AP ↑ | Δ mask AP vs ATSS w. IoU of the same row")
    body = [ln for ln in md[2:] if ln.startswith("| 128 |")]
    assert len(body) == 6
    assert any(ln.startswith("| 128 | **SipMask head** | **ATSS w. maIoU** | 1 | **") for ln in body)
    assert any(ln.startswith("| 128 | YOLACT++ R101 | ATSS w. IoU | 1 |") and "| baseline |" in ln for ln in body)
    csv_lines = to_csv(rows).splitlines()
    assert csv_lines[0].startswith("scale,row,assigner,label,seeds,best,baseline,mask_AP_delta,")
    assert csv_lines[1].startswith("128,sipmask,fixed_iou,SipMask head · fixed IoU threshold,1,0,"
                                   "ATSS w. IoU of the same row,")


def test_a_fixed_row_among_crossed_rows_gets_no_delta_and_says_why():
    sw = _sweep(variants=("yolact", "sipmask"), bootstrap_resamples=0)
    cells = grid_cells(replace(Config(), sweep=sw))
    rows = summarise([CellResult(c, str(i), {"segm/AP": 10.0 + i}) for i, c in enumerate(cells)], cells)
    note = compare_rows(rows, {}, sw)
    fixed = next(r for r in rows if r.variant == "yolact")
    assert fixed.deltas == {} and not fixed.is_baseline
    assert "S = 128, YOLACT: no ATSS w. IoU line (the row fixes its assigner)" in note
    assert next(r for r in rows if (r.variant, r.assigner) == ("sipmask", "atss_maiou")).deltas["segm/AP"].delta == 1.0
