"""The sweep report: the paper's Table-2 layout built from the sweep's MLflow child runs.

MLflow is the record (Tune's state is only a scheduler cache): every FINISHED child run of the
sweep's parent run is one cell; cells of the same row (scale, assigner or variant) are seeds and
are averaged. Output, under `<sweep dir>/report/` and logged to the parent run under `report/`:

- `table.md`  one row per (scale, assigner): mask AP, its difference from the scale's baseline row
  with a 95 % interval (`pipeline.report.compare`), AP50, AP75, APS, APM, APL, oLRP, box AP, fps,
  #anchors, train time; `mean ± std` (sample std, n-1) when a row has several seeds; the leading
  row of a scale (highest mean mask AP at the precision shown) in bold only when it is
  significantly above every other row of its scale; a metric COCOeval leaves undefined (-1, e.g.
  APL with no large objects) shows as `n/a`; under it, what the fps column measured (`fps_note`),
  how the intervals were made and what they support;
- `table.csv` the same numbers unrounded: `baseline`, `<metric>_delta` and its `_ci95_low` /
  `_ci95_high` for mask AP, box AP and oLRP, then one `<metric>_mean` / `<metric>_std` pair per
  column;
- `figures/*.png` see `pipeline.report.figures`.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

from pipeline.report.uncertainty import METRICS, Interval
from pipeline.sweep.grid import Cell, row_label
from pipeline.sweep.results import CellResult


@dataclass(frozen=True)
class Column:
    metric: str  # the flat MLflow metric name
    header: str
    digits: int = 1
    higher_is_better: bool | None = True  # None: no arrow (a cost, not a score)
    show_std: bool = True  # False for what seeds cannot change (the anchor count)
    # COCOeval (and our oLRP) report -1 where a metric is undefined, e.g. APL without large GTs.
    negative_is_undefined: bool = True


COLUMNS = (
    Column("segm/AP", "mask AP"),
    Column("segm/AP50", "AP50"),
    Column("segm/AP75", "AP75"),
    Column("segm/APS", "APS"),
    Column("segm/APM", "APM"),
    Column("segm/APL", "APL"),
    Column("segm/oLRP", "oLRP", higher_is_better=False),
    Column("bbox/AP", "box AP"),
    Column("fps", "fps", negative_is_undefined=False),
    Column("num_anchors", "#anchors", digits=0, higher_is_better=None, show_std=False,
           negative_is_undefined=False),
    Column("train_time", "train time (s)", digits=0, higher_is_better=None,
           negative_is_undefined=False),
)
BEST_BY = "segm/AP"
MISSING = "–"  # no finished run
UNDEFINED = "n/a"  # runs finished, but the metric is undefined for them (COCO's -1)


@dataclass
class Row:
    scale: int
    name: str  # assigner or variant key
    label: str
    results: list[CellResult]
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)  # only when n >= 2
    leading: bool = False  # highest mean mask AP of its scale at the precision shown
    # Filled by `pipeline.report.compare`: leading and significantly above every other row.
    best: bool = False
    baseline: str | None = None  # label of the row the deltas are taken against
    deltas: dict[str, Interval] = field(default_factory=dict)  # metric -> difference from the baseline
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> its own interval

    @property
    def n(self) -> int:
        return len(self.results)


def summarise(results: list[CellResult], grid: list[Cell] | None = None) -> list[Row]:
    """Rows in grid order (results' order without a grid), seeds averaged, best per scale marked."""
    order = [c.row for c in (grid if grid is not None else [r.cell for r in results])]
    is_variant = any(c.variant for c in (grid or [r.cell for r in results]))
    rows: dict[tuple[int, str], Row] = {}
    for key in order:
        rows.setdefault(key, Row(key[0], key[1], row_label(key, is_variant), []))
    for res in results:
        row = rows.setdefault(res.cell.row, Row(*res.cell.row, row_label(res.cell.row, is_variant), []))
        row.results.append(res)
    for row in rows.values():
        for col in COLUMNS:
            values = [r.metrics[col.metric] for r in row.results
                      if _defined(r.metrics.get(col.metric), col)]
            if values:
                row.mean[col.metric] = sum(values) / len(values)
            if len(values) >= 2:
                row.std[col.metric] = _sample_std(values)
    _mark_leading(list(rows.values()))
    return list(rows.values())


def _defined(v, col: Column) -> bool:
    ok = isinstance(v, (int, float)) and math.isfinite(v)
    return ok and not (col.negative_is_undefined and v < 0)


def _sample_std(values: list[float]) -> float:
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _mark_leading(rows: list[Row]) -> None:
    """Leading = highest mean mask AP at the precision the table shows (what a reader can check)."""
    digits = next(c.digits for c in COLUMNS if c.metric == BEST_BY)
    for scale in {r.scale for r in rows}:
        scored = {id(r): round(r.mean[BEST_BY], digits) for r in rows
                  if r.scale == scale and BEST_BY in r.mean}
        if len(scored) < 2 or len(set(scored.values())) == 1:
            continue  # nothing to compare against, or all tied
        top = max(scored.values())
        for r in rows:
            r.leading = r.leading or scored.get(id(r)) == top


def _fmt(row: Row, col: Column) -> str:
    if col.metric not in row.mean:
        return UNDEFINED if row.n else MISSING
    text = f"{row.mean[col.metric]:.{col.digits}f}"
    if col.show_std and col.metric in row.std:
        text += f" ± {row.std[col.metric]:.{col.digits}f}"
    return text


def _arrow(col: Column) -> str:
    return {True: " ↑", False: " ↓", None: ""}[col.higher_is_better]


def _fmt_delta(row: Row, metric: str) -> str:
    """`+2.2 [-0.4, +4.9]`, `baseline`, or `+2.2` without an interval."""
    if not row.n or row.baseline is None:
        return MISSING
    if metric not in row.deltas:
        return "baseline" if row.label == row.baseline else UNDEFINED
    d = row.deltas[metric]
    ci = f" [{d.low:+.1f}, {d.high:+.1f}]" if math.isfinite(d.low) else ""
    return f"{d.delta:+.1f}{ci}"


def to_markdown(rows: list[Row], note: str = "") -> str:
    """Hand-built markdown table (no tabulate dependency); `note` (how the intervals were made and
    what they support, `pipeline.report.compare`) goes under it."""
    is_variant = any(r.results and r.results[0].cell.variant for r in rows)
    baseline = next((r.baseline for r in rows if r.baseline), None)
    header = ["scale", "model" if is_variant else "assigner", "seeds"]
    for c in COLUMNS:
        header.append(c.header + _arrow(c))
        if c.metric == BEST_BY:
            header.append(f"Δ mask AP vs {baseline} [95 % CI]" if baseline else "Δ mask AP")
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---:", ":---", "---:"] + ["---:"] * (len(header) - 3)) + "|"]
    for r in rows:
        cells = [str(r.scale), f"**{r.label}**" if r.best else r.label, str(r.n)]
        for col in COLUMNS:
            text = _fmt(r, col)
            cells.append(f"**{text}**" if r.best and col.metric == BEST_BY else text)
            if col.metric == BEST_BY:
                cells.append(_fmt_delta(r, BEST_BY))
        lines.append("| " + " | ".join(cells) + " |")
    seeds = ", ".join(map(str, sorted({r.n for r in rows if r.n}))) or "none"
    lines += ["", f"{sum(r.n for r in rows)} runs; mean ± sample std over seeds where a row has "
              f"several (seeds per row: {seeds}); AP and oLRP ×100; bold: the best {header[1]} of a "
              f"scale by mask AP, only when its 95 % interval against every other row of that scale "
              f"lies above 0; {MISSING}: no finished run; {UNDEFINED}: undefined for this data (e.g. "
              "APL without large objects)."]
    lines += ["", fps_note(rows)]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def fps_note(rows: list[Row]) -> str:
    """What the fps column measured, from each run's `fps_setup`; says so when cells differ."""
    setups = sorted({r.fps_setup for row in rows for r in row.results if r.fps_setup})
    if not setups:
        return "fps: not measured."
    if len(setups) == 1:
        return f"fps: {setups[0]}; each cell timed alone after all trials, median of the runs."
    return "fps measured differently across cells (not comparable): " + "; ".join(setups) + "."


def _csv_deltas(r: Row) -> list[str]:
    """Per compared metric: delta, ci95_low, ci95_high (the baseline's own row: 0 and no CI)."""
    out = []
    for m in METRICS:
        d = r.deltas.get(m.key)
        if d is None:
            is_base = r.baseline is not None and r.label == r.baseline and m.key in r.mean
            out += ["0.0" if is_base else "", "", ""]
        else:
            out += [repr(d.delta)] + [repr(v) if math.isfinite(v) else "" for v in (d.low, d.high)]
    return out


def to_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["scale", "name", "label", "seeds", "best", "baseline"]
                    + [f"{m.name}_delta{s}" for m in METRICS for s in ("", "_ci95_low", "_ci95_high")]
                    + [f"{c.metric}_{s}" for c in COLUMNS for s in ("mean", "std")])
    for r in rows:
        writer.writerow([r.scale, r.name, r.label, r.n, int(r.best), r.baseline or ""] + _csv_deltas(r)
                        + [repr(d[c.metric]) if c.metric in d else ""
                           for c in COLUMNS for d in (r.mean, r.std)])
    return buf.getvalue()
