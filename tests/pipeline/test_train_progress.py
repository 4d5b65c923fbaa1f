"""Rank 0's progress display: a real tqdm bar (here into a buffer) or a line per logging window."""
import io
from functools import partial

from tqdm import tqdm

from pipeline.train.progress import TrainProgress, progress_line

WINDOW = {"iteration": 120, "train/loss": 14.37, "train/loss_cls": 3.26, "train/loss_box": 4.14, "train/lr": 0.0019}


def test_the_line_has_iteration_losses_lr_speed_and_eta():
    line = progress_line(WINDOW, total=600, global_batch=8, train_time=120.0)
    assert line == "iter 120/600 · loss 14.37 (box 4.14 · cls 3.26) · lr 1.9e-03 · 8.0 img/s · ETA 8m00s"


def test_without_a_bar_each_window_is_one_line_on_stderr(capsys):
    shown = TrainProgress(600, 100, 8)
    for _ in range(20):
        shown.step()
    shown.window(WINDOW, train_time=120.0)
    shown.close()
    assert capsys.readouterr().err == progress_line(WINDOW, 600, 8, 120.0) + "\n"


def test_a_bar_resumes_at_the_restored_iteration_and_carries_the_windows_losses():
    buf = io.StringIO()
    shown = TrainProgress(600, 100, 8, partial(tqdm, file=buf, mininterval=0, ncols=150))
    for _ in range(20):
        shown.step()
    shown.window(WINDOW, train_time=120.0)
    shown.close()
    last = buf.getvalue().split("\r")[-1]
    assert last.startswith("loss 14.37 (box 4.14 · cls 3.26) · lr 1.9e-03 · 8.0 img/s:") and "120/600" in last
