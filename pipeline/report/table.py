"""The sweep report: the paper's Table-2 layout built from the sweep's MLflow child runs.

MLflow is the record (Tune's state is only a scheduler cache): every FINISHED child run of the
sweep's parent run is one cell; cells of the same row (scale, assigner or variant) are seeds and
are averaged. A line is (scale, model-option row, assigner): two assigners never share one.
Output, under `<sweep dir>/report/` and logged to the parent run under `report/`:

- `table.md`  one line per (scale, row, assigner), with the row and the assigner in their own
  columns when the grid has model-option rows: mask AP, its difference from the scale's baseline row
  with a 95 % interval (`pipeline.report.compare`), AP50, AP75, APS, APM, APL, oLRP, box AP, fps,
  #anchors, train time; `mean ± std` (sample std, n-1) when a row has several seeds; the leading
  row of a scale (highest mean mask AP at the precision shown) in bold only when it is
  significantly above every other row of its scale; a metric COCOeval leaves undefined (-1, e.g.
  APL with no large objects) shows as `n/a`; under it, what the fps column measured (`fps_note`),
  where the cells' wall time went (`time_note`),
  how the intervals were made and what they support;
- `table.csv` the same numbers unrounded: `scale`, `row`, `assigner`, `label`, `baseline`, `<metric>_delta` and its `_ci95_low` /
  `_ci95_high` for mask AP, box AP and oLRP, then one `<metric>_mean` / `<metric>_std` pair per
  column;
- `figures/*.png` see `pipeline.report.figures`.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, field

from pipeline.report.uncertainty import METRICS, Interval
from pipeline.sweep.grid import Cell, assigner_label, variant_label
from pipeline.sweep.results import CellResult
from pipeline.train import phases


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
    """One line of the report: the runs (seeds) of one (scale, model-option row, assigner)."""
    scale: int
    variant: str  # the model-option row's key, "" in a grid without such rows
    assigner: str
    results: list[CellResult]
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)  # only when n >= 2
    leading: bool = False  # highest mean mask AP of its group (`compare_groups`) at the precision shown
    # Filled by `pipeline.report.compare`: leading and significantly above every other row.
    best: bool = False
    baseline: str | None = None  # label of the line the deltas are taken against
    is_baseline: bool = False  # this line is its group's baseline
    deltas: dict[str, Interval] = field(default_factory=dict)  # metric -> difference from the baseline
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> its own interval

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.scale, self.variant, self.assigner)

    @property
    def row_label(self) -> str:
        return variant_label(self.variant) if self.variant else ""

    @property
    def label(self) -> str:
        """`ATSS w. maIoU`, or `+ SipMask head · ATSS w. maIoU` on a model-option row."""
        name = assigner_label(self.assigner)
        return f"{self.row_label} · {name}" if self.variant else name


def summarise(results: list[CellResult], grid: list[Cell] | None = None) -> list[Row]:
    """Rows in grid order (results' order without a grid), seeds averaged, best per scale marked."""
    order = [c.row for c in (grid if grid is not None else [r.cell for r in results])]
    rows: dict[tuple[int, str, str], Row] = {}
    for key in order:
        rows.setdefault(key, Row(*key, []))
    for res in results:
        rows.setdefault(res.cell.row, Row(*res.cell.row, [])).results.append(res)
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


def crosses_assigners(rows: list[Row]) -> bool:
    """Some model-option row holds several assigners (`grid.crosses_assigners` of the grid)."""
    variants = {r.variant for r in rows if r.variant}
    return any(len({r.assigner for r in rows if r.variant == v}) > 1 for v in variants)


def compare_groups(rows: list[Row]) -> dict[tuple[int, str], list[Row]]:
    """The lines compared with each other: those of one scale, and of one model-option row when
    rows cross with assigners (then a line is named by its assigner, see `compared_name`)."""
    crossed = crosses_assigners(rows)
    groups: dict[tuple[int, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.scale, r.variant if crossed else ""), []).append(r)
    return groups


def compared_name(r: Row, crossed: bool) -> str:
    """What `sweep.baseline` is matched against: the assigner within a crossed row, else the row."""
    return r.assigner if crossed or not r.variant else r.variant


def _mark_leading(rows: list[Row]) -> None:
    """Leading = highest mean mask AP of its group at the precision the table shows (what a reader
    can check)."""
    digits = next(c.digits for c in COLUMNS if c.metric == BEST_BY)
    for group in compare_groups(rows).values():
        scored = {id(r): round(r.mean[BEST_BY], digits) for r in group if BEST_BY in r.mean}
        if len(scored) < 2 or len(set(scored.values())) == 1:
            continue  # nothing to compare against, or all tied
        top = max(scored.values())
        for r in group:
            r.leading = scored.get(id(r)) == top


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
        return "baseline" if row.is_baseline else UNDEFINED
    d = row.deltas[metric]
    ci = f" [{d.low:+.1f}, {d.high:+.1f}]" if math.isfinite(d.low) else ""
    return f"{d.delta:+.1f}{ci}"


def to_markdown(rows: list[Row], note: str = "") -> str:
    """Hand-built markdown table (no tabulate dependency); `note` (how the intervals were made and
    what they support, `pipeline.report.compare`) goes under it."""
    is_variant = any(r.variant for r in rows)
    baselines = {r.baseline for r in rows if r.baseline}
    header = ["scale"] + (["model", "assigner"] if is_variant else ["assigner"]) + ["seeds"]
    for c in COLUMNS:
        header.append(c.header + _arrow(c))
        if c.metric == BEST_BY:
            header.append(f"Δ mask AP vs {baselines.pop()} [95 % CI]" if len(baselines) == 1
                          else "Δ mask AP vs its baseline [95 % CI]" if baselines else "Δ mask AP")
    lead = len(header) - len(COLUMNS) - 1
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---:"] + [":---"] * (lead - 2) + ["---:"] * (len(header) - lead + 1)) + "|"]
    for r in rows:
        names = [r.row_label, assigner_label(r.assigner)] if is_variant else [r.label]
        cells = [str(r.scale)] + [f"**{n}**" if r.best else n for n in names] + [str(r.n)]
        for col in COLUMNS:
            text = _fmt(r, col)
            cells.append(f"**{text}**" if r.best and col.metric == BEST_BY else text)
            if col.metric == BEST_BY:
                cells.append(_fmt_delta(r, BEST_BY))
        lines.append("| " + " | ".join(cells) + " |")
    seeds = ", ".join(map(str, sorted({r.n for r in rows if r.n}))) or "none"
    lines += ["", f"{sum(r.n for r in rows)} runs; mean ± sample std over seeds where a row has "
              f"several (seeds per row: {seeds}); AP and oLRP ×100; bold: the best line of what is compared (a "
              f"scale, or a row of it) by mask AP, only when its 95 % interval against every other line there "
              f"lies above 0; {MISSING}: no finished run; {UNDEFINED}: undefined for this data (e.g. "
              "APL without large objects)."]
    lines += ["", fps_note(rows)]
    timing = time_note(rows)
    if timing:
        lines += ["", timing]
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


def time_note(rows: list[Row]) -> str:
    """Where the cells' wall time went (`pipeline.train.phases`), medians over the cells that
    recorded it; "" when none did (runs from before it was recorded)."""
    runs = [r.metrics for row in rows for r in row.results if phases.CELL in r.metrics]
    if not runs:
        return ""

    def median(key: str) -> float:
        return statistics.median(m.get(key, 0.0) for m in runs)

    return (f"time per cell (median of {len(runs)}): {median(phases.CELL):.0f} s, of which training "
            f"{median(phases.TRAINING):.0f} s; start-up {median(phases.STARTUP):.0f} s, final evaluation "
            f"{median(phases.EVALUATION):.0f} s, logging {median(phases.LOGGING):.0f} s: "
            f"{100 * median(phases.OVERHEAD):.0f} % of a cell's wall time is not training.")


def _csv_deltas(r: Row) -> list[str]:
    """Per compared metric: delta, ci95_low, ci95_high (the baseline's own row: 0 and no CI)."""
    out = []
    for m in METRICS:
        d = r.deltas.get(m.key)
        if d is None:
            out += ["0.0" if r.is_baseline and m.key in r.mean else "", "", ""]
        else:
            out += [repr(d.delta)] + [repr(v) if math.isfinite(v) else "" for v in (d.low, d.high)]
    return out


def to_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["scale", "row", "assigner", "label", "seeds", "best", "baseline"]
                    + [f"{m.name}_delta{s}" for m in METRICS for s in ("", "_ci95_low", "_ci95_high")]
                    + [f"{c.metric}_{s}" for c in COLUMNS for s in ("mean", "std")])
    for r in rows:
        writer.writerow([r.scale, r.variant, r.assigner, r.label, r.n, int(r.best), r.baseline or ""] + _csv_deltas(r)
                        + [repr(d[c.metric]) if c.metric in d else ""
                           for c in COLUMNS for d in (r.mean, r.std)])
    return buf.getvalue()
