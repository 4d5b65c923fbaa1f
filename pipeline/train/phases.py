"""Where a run's wall time went, as MLflow metrics (seconds), so that the overhead around the
training itself is measured on every run rather than guessed (issue: the main job should spend
its time training).

    time/cell          the run's wall time: from the trial (or `run_training`) starting to the
                       MLflow run finishing
    time/training      the worker's training loop (data loading included)
    time/evaluation    the worker's final evaluation (COCO eval, overlays; fps is timed apart)
    time/logging       the driver logging the final artifacts and the MLflow model
    time/startup       everything else: opening the MLflow run, starting Ray Train's controller
                       and worker, building data and model, restoring, the final hand-over
    time/overhead      1 − training / cell

`time/worker_setup` (data, model, restore inside the worker) is the part of the start-up that is
the worker's own. The worker measures its phases with its own clock and reports durations only,
so nothing depends on the nodes' clocks agreeing.
"""
from __future__ import annotations

CELL = "time/cell"
TRAINING = "time/training"
EVALUATION = "time/evaluation"
LOGGING = "time/logging"
STARTUP = "time/startup"
WORKER_SETUP = "time/worker_setup"
OVERHEAD = "time/overhead"


def phase_times(cell_s: float, logging_s: float, worker: dict[str, float]) -> dict[str, float]:
    """The driver's view of a finished run: its wall time split with the worker's durations."""
    training, evaluation = worker.get(TRAINING, 0.0), worker.get(EVALUATION, 0.0)
    return {CELL: cell_s, LOGGING: logging_s,
            STARTUP: max(cell_s - training - evaluation - logging_s, 0.0),
            OVERHEAD: 1.0 - training / cell_s if cell_s > 0 else 0.0}
