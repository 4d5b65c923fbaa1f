"""A sweep's report on disk and in MLflow, and the summary a finished sweep prints.

`build_report(record)` reads the sweep's finished cells from MLflow (`pipeline.sweep.results`)
with each run's per-image evaluation (`evaluation/per_image.npz`), compares every row with its
scale's baseline (`pipeline.report.compare`), writes `<sweep dir>/report/` — `table.md`,
`table.csv` (`pipeline.report.table`) and `figures/*.png` (`pipeline.report.figures`) — logs
that folder to the sweep's parent run under `report/`, and each row's differences from the
baseline (`delta/segm_AP`, `delta/segm_AP_ci95_low`, …) to the row's own runs. `finish_sweep(outcome)` does that for a sweep that just ran and prints the
table, where everything is, how to open the MLflow UI and how to resume.
"""
from __future__ import annotations

import math
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipeline import tracking
from pipeline.tracking_view import runs_url
from pipeline.eval import image_eval
from pipeline.eval.evaluate import PER_IMAGE_FILE
from pipeline.eval.image_eval import ImageEval
from pipeline.report.compare import compare_rows
from pipeline.report.table import Row, summarise, to_csv, to_markdown
from pipeline.sweep.callbacks import TUNE_DIR
from pipeline.sweep.driver import SweepOutcome, resume_command
from pipeline.sweep.record import SweepRecord, sweep_dir
from pipeline.sweep.results import CellResult, finished_results, missing_cells

PER_IMAGE_ARTIFACT = f"evaluation/{PER_IMAGE_FILE}"  # where `pipeline.train.run` logs it


@dataclass
class Report:
    directory: Path
    rows: list[Row]
    markdown: str
    missing: list[str]  # cell keys of the grid without a FINISHED run
    figures: list[Path]


def build_report(record: SweepRecord, *, figures: bool = True, log: bool = True) -> Report:
    """Read the sweep's child runs, write table.md / table.csv / figures, log them to the parent
    (and each row's differences from the baseline to its runs)."""
    results = finished_results(record)
    grid = record.grid
    rows = summarise(results, grid)
    note = compare_rows(rows, _per_image(record, results), record.base_config().sweep)
    out = sweep_dir(record.base_config(), record.name) / "report"
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows, note)
    (out / "table.md").write_text(markdown)
    (out / "table.csv").write_text(to_csv(rows))
    made: list[Path] = []
    if figures:
        from pipeline.report.figures import make_figures  # matplotlib + data: only when asked
        made = make_figures(record, rows, out / "figures")
    if log:
        logger = tracking.RunLogger(tracking.resolve_tracking_uri(record.tracking()), record.parent_run_id)
        logger.log_artifact(out, "report")
        logger.log_metrics({"report/cells_finished": len(results), "report/cells": len(grid)})
        _log_deltas(record, rows)
    return Report(out, rows, markdown, missing_cells(record, results), made)


def _per_image(record: SweepRecord, results: list[CellResult]) -> dict[str, dict[str, ImageEval]]:
    """cell key -> the run's per-image outcomes, for the runs that logged them."""
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in results:
            path = tracking.download_artifact(record.tracking(), r.run_id, PER_IMAGE_ARTIFACT, Path(tmp) / r.run_id)
            if path is None:
                continue
            try:
                found[r.cell.key] = image_eval.load(path)
            except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:  # corrupt or of another format
                print(f"report: {PER_IMAGE_ARTIFACT} of run {r.run_id} is unreadable ({e}); its row gets no interval")
    return found


def _log_deltas(record: SweepRecord, rows: list[Row]) -> None:
    """`delta/segm_AP`, `delta/segm_AP_ci95_low`, … of its row on every run of the row."""
    uri = tracking.resolve_tracking_uri(record.tracking())
    for row in rows:
        values = {}
        for key, d in row.deltas.items():
            name = "delta/" + key.replace("/", "_")
            values[name] = d.delta
            if math.isfinite(d.low):
                values.update({f"{name}_ci95_low": d.low, f"{name}_ci95_high": d.high})
        for res in row.results if values else ():
            tracking.RunLogger(uri, res.run_id).log_metrics(values)


def finish_sweep(outcome: SweepOutcome) -> Report:
    """Write the report of a sweep that just ran and print where everything is."""
    record = outcome.record
    report = build_report(record)
    print("\n" + report.markdown)
    print(f"report: {report.directory} (table.md, table.csv, figures/)")
    uri = record.tracking_uri
    print(f"MLflow: {uri}, experiment {record.experiment!r}, parent run {record.parent_run_id}")
    _, experiment_id = tracking.get_or_create_experiment(record.tracking())
    if uri.startswith("sqlite:"):
        print(f"  open the UI: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
              f" --workers 1  ->  {runs_url('http://127.0.0.1:5000', experiment_id)}")
    elif "127.0.0.1" in uri or "localhost" in uri:
        print(f"  open the UI: {runs_url(uri, experiment_id)} (from another machine through a tunnel, "
              f"e.g. `ray attach cluster.yaml -p {urlparse(uri).port or 5000}`)")
    else:
        print(f"  open the UI: {runs_url(uri, experiment_id)}")
    for key, error in outcome.errors.items():
        print(f"trial {key} failed: {error} (its log: {sweep_dir(record.base_config(), record.name)}"
              f"/{TUNE_DIR}/{key}/error.txt)")
    if not outcome.complete:
        print(f"incomplete: {len(outcome.missing)} of {len(record.cells)} cells have no finished run "
              f"({', '.join(outcome.missing)}); resume with: {resume_command(record)}")
    return report
