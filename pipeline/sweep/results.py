"""A sweep's finished cells, read back from MLflow (the record; Tune's state only schedules).

Every FINISHED child run of the sweep's parent run is one cell, identified by its tags
(`grid.Cell.tags`); a cell with several FINISHED runs keeps the newest.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline import tracking
from pipeline.sweep.grid import Cell
from pipeline.sweep.record import SweepRecord
from pipeline.sweep.timing import FPS_SETUP_TAG


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    run_id: str
    metrics: dict[str, float]
    fps_setup: str = ""  # what its fps measured (`pipeline.sweep.timing`); "" when not timed


def cell_of_run(run) -> Cell:
    """The cell an MLflow run trained, from its tags (see `grid.Cell.tags`)."""
    tags = run.data.tags
    try:
        return Cell(int(tags["scale"]), tags["assigner"], int(tags["seed"]), tags.get("variant", ""))
    except (KeyError, ValueError) as e:
        raise ValueError(f"MLflow run {run.info.run_id} lacks a valid cell tag ({e})") from None


def collect(runs) -> list[CellResult]:
    """FINISHED runs as cell results; a cell with several FINISHED runs keeps the newest."""
    newest: dict[str, tuple[int, CellResult]] = {}
    for run in runs:
        if run.info.status != "FINISHED":
            continue
        cell = cell_of_run(run)
        res = CellResult(cell, run.info.run_id, dict(run.data.metrics), run.data.tags.get(FPS_SETUP_TAG, ""))
        if cell.key not in newest or run.info.start_time > newest[cell.key][0]:
            newest[cell.key] = (run.info.start_time, res)
    return [r for _, r in newest.values()]


def finished_results(record: SweepRecord) -> list[CellResult]:
    """The sweep's cells that have a FINISHED MLflow child run."""
    if record.parent_run_id is None:
        raise ValueError(f"sweep {record.name!r} has no MLflow parent run yet (it never started)")
    return collect(tracking.child_runs(record.tracking(), record.parent_run_id))


def missing_cells(record: SweepRecord, results: list[CellResult]) -> list[str]:
    """Keys of the grid's cells without a FINISHED run, in grid order."""
    done = {r.cell.key for r in results}
    return [c.key for c in record.grid if c.key not in done]
