"""What rank 0 shows while it trains: a live bar on a terminal, a line every `log_every` in a log.

The bar is shown when the driver has a terminal (`run_training` passes that on). Ray workers
write to log files, so there the loop hands in Ray's distributed tqdm (`ray.experimental.
tqdm_ray`), whose updates the driver draws as one real tqdm bar; an in-process run
(`num_workers=0`) uses tqdm itself. In a log the same facts come as a line per logging window:

    iter 120/600 · loss 14.37 (box 4.14 · cls 3.26 · mask 6.01 · sem 0.96) · lr 1.9e-03 · 8.1 img/s · ETA 1m02s
"""
from __future__ import annotations

import sys
from typing import Any, Callable


def summary(metrics: dict[str, Any], global_batch: int, per_step: float) -> str:
    """`loss 14.37 (box 4.14 · …) · lr 1.9e-03 · 8.1 img/s`: the window's losses, lr and speed."""
    terms = " · ".join(f"{k.removeprefix('train/loss_')} {v:.2f}" for k, v in sorted(metrics.items())
                       if k.startswith("train/loss_"))
    return (f"loss {metrics.get('train/loss', float('nan')):.2f} ({terms}) · "
            f"lr {metrics.get('train/lr', float('nan')):.1e} · {global_batch / max(per_step, 1e-9):.1f} img/s")


def progress_line(metrics: dict[str, Any], total: int, global_batch: int, train_time: float) -> str:
    """One logging window as a line. The speed is the training time per step so far (kept
    across resumes), so start-up and evaluation do not distort the ETA."""
    it = int(metrics["iteration"])
    per_step = train_time / max(it, 1)
    eta = int(per_step * (total - it))
    return f"iter {it}/{total} · {summary(metrics, global_batch, per_step)} · ETA {eta // 60}m{eta % 60:02d}s"


class TrainProgress:
    """Rank 0's progress display; `make_bar(total=…, desc=…, unit=…)` is a tqdm-like bar factory
    for the live bar, or None for the lines."""

    def __init__(self, total: int, start: int, global_batch: int, make_bar: Callable | None = None):
        self.total, self.global_batch = total, global_batch
        self.bar = make_bar(total=total, desc="train", unit="it") if make_bar else None
        if self.bar is not None:
            self.bar.n = start
            self.bar.refresh()

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def window(self, metrics: dict[str, Any], train_time: float) -> None:
        """A logging window ended: new losses in the bar's description, or a line on stderr
        (a log, not a result: jobs print their result as JSON on stdout)."""
        if self.bar is None:
            print(progress_line(metrics, self.total, self.global_batch, train_time), file=sys.stderr, flush=True)
        else:
            per_step = train_time / max(int(metrics["iteration"]), 1)
            self.bar.set_description(summary(metrics, self.global_batch, per_step))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
