"""A sweep's console: one status table of its cells instead of every worker's output.

`render_table` is a pure function of the cells' states (tests call it directly); `StatusBoard`
keeps those states from the trials' events (forwarded by a Tune callback in `driver`) and redraws
the table: in
place on a terminal (at most every `REDRAW_S`), and on a log (not a terminal) one line per change
of state, then the whole table at the end. The full worker output stays in Ray's log files, and
the table's last line says where.
"""
from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass, replace

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
REDRAW_S = 1.0  # a terminal redraw at most this often: training reports come every few seconds
MASK_AP = "segm/AP"
LOSS = "train/loss"
ERROR_WIDTH = 90  # a failed cell's reason is cut to this many characters (the log has the rest)


@dataclass(frozen=True)
class CellState:
    state: str = PENDING
    iteration: int | None = None
    total: int | None = None
    loss: float | None = None
    mask_ap: float | None = None
    error: str | None = None


def describe(s: CellState) -> str:
    """The status cell of one row: `running  iter 120/600 · loss 14.37`, `done  mask AP 31.2`."""
    if s.state == RUNNING and s.iteration is not None:
        total = f"/{s.total}" if s.total else ""
        loss = f" · loss {s.loss:.2f}" if s.loss is not None and math.isfinite(s.loss) else ""
        return f"running  iter {s.iteration}{total}{loss}"
    if s.state == DONE and s.mask_ap is not None:
        return f"done     mask AP {s.mask_ap:.1f}"
    if s.state == FAILED:
        reason = (s.error or "").strip()
        return f"failed   {reason[:ERROR_WIDTH]}{'…' if len(reason) > ERROR_WIDTH else ''}"
    return s.state


def render_table(keys: list[str], states: dict[str, CellState], logs: str) -> str:
    """The table of every cell in grid order, a count of each state and where the logs are."""
    width = max([len(k) for k in keys] + [len("cell")])
    rows = [f"{'cell'.ljust(width)}  status"]
    rows += [f"{k.ljust(width)}  {describe(states.get(k, CellState()))}" for k in keys]
    counts = {st: sum(states.get(k, CellState()).state == st for k in keys)
              for st in (DONE, RUNNING, FAILED, PENDING)}
    rows.append(" · ".join(f"{n} {st}" for st, n in counts.items() if n) + f" of {len(keys)}")
    rows += logs.splitlines()
    return "\n".join(rows)


def updated(state: CellState, result: dict) -> CellState:
    """A running cell's state after one reported result (the final one carries the mask AP)."""
    if MASK_AP in result and "reused" in result:  # the trial's own last report
        return replace(state, state=DONE, mask_ap=float(result[MASK_AP]))
    it = result.get("iteration")
    return replace(state, state=RUNNING, iteration=int(it) if it is not None else state.iteration,
                   loss=float(result[LOSS]) if LOSS in result else state.loss)


class StatusBoard:
    """Each cell's state, kept from the trials' events, and the table shown from it (see the
    module doc). Picklable (Tune saves its callbacks with its state): the stream is looked up
    when writing."""

    def __init__(self, keys: list[str], totals: dict[str, int | None] | None = None):
        self.keys = list(keys)
        self.states: dict[str, CellState] = {k: CellState(total=(totals or {}).get(k)) for k in keys}
        self.restart("")

    def restart(self, logs: str) -> None:
        """A new console (a new or resumed sweep): draw afresh, below whatever is on screen."""
        self.logs = logs
        self._drawn, self._drawn_rows = "", 0
        self._last_draw = -REDRAW_S

    def set(self, key: str, state: CellState) -> None:
        old = self.states.get(key, CellState())
        self.states[key] = state
        if not sys.stdout.isatty() and state.state != old.state:
            print(f"{key}: {describe(state)}", flush=True)
        self.draw()

    def start(self, key: str) -> None:
        self.set(key, replace(self.states.get(key, CellState()), state=RUNNING))

    def result(self, key: str, result: dict) -> None:
        self.set(key, updated(self.states.get(key, CellState()), result))

    def complete(self, key: str, last_result: dict) -> None:
        final = updated(self.states.get(key, CellState()), last_result)
        self.set(key, final if final.state == DONE else replace(final, state=DONE))

    def fail(self, key: str, reason: str) -> None:
        self.set(key, replace(self.states.get(key, CellState()), state=FAILED, error=reason))

    def draw(self, force: bool = False) -> None:
        """On a terminal, the table in place of the last one when it changed; elsewhere only
        when forced."""
        tty = sys.stdout.isatty()
        if not (tty or force) or (not force and time.monotonic() - self._last_draw < REDRAW_S):
            return
        text = render_table(self.keys, self.states, self.logs)
        if text == self._drawn and not force:
            return
        if tty and self._drawn_rows:  # back to the table's first row, then clear to the end
            sys.stdout.write(f"\x1b[{self._drawn_rows}F\x1b[J")
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        width = shutil.get_terminal_size().columns  # a long line wraps onto several rows
        self._drawn_rows = sum(max(1, -(-len(line) // width)) for line in text.splitlines())
        self._drawn, self._last_draw = text, time.monotonic()


def last_error_line(path: str | None) -> str:
    """The last non-empty line of a failed trial's error file (the exception and its message)."""
    try:
        lines = [ln for ln in open(path).read().splitlines() if ln.strip()] if path else []
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""
