"""The sweep's Tune callbacks: the status table, and the fault injection of the resume tests.

Fault injection, read from the driver's environment: once N trials have completed,
`MASKAWARE_SWEEP_INTERRUPT_AFTER=N` interrupts the sweep (SIGINT, as Ctrl-C would: Tune saves its
state and the sweep exits with 130) and `MASKAWARE_SWEEP_CRASH_AFTER=N` kills the driver on the
spot (`os._exit(75)`: no cleanup, Tune's state as a crash leaves it).
"""
from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from ray import tune

from pipeline.ray_utils import logs_dir
from pipeline.sweep.grid import Cell
from pipeline.sweep.status import StatusBoard, last_error_line

log = logging.getLogger(__name__)

INTERRUPT_ENV = "MASKAWARE_SWEEP_INTERRUPT_AFTER"
CRASH_ENV = "MASKAWARE_SWEEP_CRASH_AFTER"
EXIT_CRASHED = 75
TUNE_DIR = "tune"  # Tune's own directory inside the sweep's


def trial_name(trial) -> str:
    """The cell key, for a Tune Trial or a Result (both carry the trial's config)."""
    return Cell(**trial.config["cell"]).key


class InterruptAfter(tune.Callback):
    """Deterministic interruption for tests; reads the env at call time (Tune pickles callbacks
    with its state and restores them, so a resumed sweep without the variable must not fire)."""

    def __init__(self):
        self.completed = 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.completed += 1
        crash, interrupt = os.environ.get(CRASH_ENV), os.environ.get(INTERRUPT_ENV)
        if crash is not None and self.completed >= int(crash):
            print(f"{CRASH_ENV}={crash}: the sweep driver dies now", flush=True)
            os._exit(EXIT_CRASHED)
        if interrupt is not None and self.completed >= int(interrupt):
            log.warning("%s=%s: interrupting the sweep", INTERRUPT_ENV, interrupt)
            os.kill(os.getpid(), signal.SIGINT)


class ShowStatus(tune.Callback):
    """Forwards Tune's trial events to the sweep's status table (`pipeline.sweep.status`)."""

    def __init__(self, board: StatusBoard, directory: Path):
        self.board, self.directory = board, directory

    def setup(self, **info):  # also on a resumed sweep, whose callbacks Tune restores from its state
        self.board.restart(f"worker logs: {logs_dir()}/worker-*.out, .err\n"
                           f"trial errors: {self.directory / TUNE_DIR}/<cell>/error.txt")

    def on_trial_start(self, iteration, trials, trial, **info):
        self.board.start(trial_name(trial))

    on_trial_recover = on_trial_start  # Tune retries a failed trial driver (sweep.trial_max_failures)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.board.result(trial_name(trial), result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.board.complete(trial_name(trial), trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info):
        self.board.fail(trial_name(trial), last_error_line(getattr(trial, "error_file", None)))

    def on_step_end(self, iteration, trials, **info):
        self.board.draw()

    def on_experiment_end(self, trials, **info):
        self.board.draw(force=True)
