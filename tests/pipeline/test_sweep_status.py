"""The sweep's status table: a pure function of the cells' states, and the states kept from trial events."""
from pipeline.sweep.status import DONE, FAILED, RUNNING, CellState, StatusBoard, render_table, updated

KEYS = ["s96-atss_iou-seed0", "s96-atss_maiou-seed0", "s128-atss_iou-seed0", "s128-atss_maiou-seed0"]


def test_the_table_shows_each_state_in_grid_order_with_counts_and_where_the_logs_are():
    states = {KEYS[0]: CellState(DONE, iteration=600, total=600, loss=9.1, mask_ap=12.345),
              KEYS[1]: CellState(RUNNING, iteration=120, total=600, loss=14.371),
              KEYS[2]: CellState(FAILED, error="ValueError: " + "x" * 100)}
    assert render_table(KEYS, states, "worker logs: /tmp/ray/logs\ntrial errors: T") == "\n".join([
        "cell                   status",
        "s96-atss_iou-seed0     done     mask AP 12.3",
        "s96-atss_maiou-seed0   running  iter 120/600 · loss 14.37",
        "s128-atss_iou-seed0    failed   ValueError: " + "x" * 78 + "…",
        "s128-atss_maiou-seed0  pending",
        "1 done · 1 running · 1 failed · 1 pending of 4",
        "worker logs: /tmp/ray/logs",
        "trial errors: T"])


def test_trial_results_move_a_cell_from_running_to_done():
    s = CellState(total=600)
    s = updated(s, {"iteration": 20, "train/loss": 30.0, "train/lr": 1e-3})
    assert s == CellState(RUNNING, iteration=20, total=600, loss=30.0)
    s = updated(s, {"iteration": 40, "segm/AP": 3.0, "eval/periodic": 1})  # a mid-training evaluation
    assert s == CellState(RUNNING, iteration=40, total=600, loss=30.0)
    assert updated(s, {"iteration": 600, "segm/AP": 12.5, "reused": 0.0}).mask_ap == 12.5


def test_off_a_terminal_the_board_prints_one_line_per_change_of_state_and_the_table_at_the_end(capsys):
    board = StatusBoard(KEYS[:2], {KEYS[0]: 600, KEYS[1]: 600})
    board.restart("worker logs: LOGS")
    board.start(KEYS[0])
    board.result(KEYS[0], {"iteration": 20, "train/loss": 30.0})  # same state: no line
    board.complete(KEYS[0], {"iteration": 600, "segm/AP": 12.5, "reused": 0.0})
    board.start(KEYS[1])
    board.fail(KEYS[1], "RuntimeError: boom")
    board.draw(force=True)
    assert capsys.readouterr().out.splitlines() == [
        f"{KEYS[0]}: running",
        f"{KEYS[0]}: done     mask AP 12.5",
        f"{KEYS[1]}: running",
        f"{KEYS[1]}: failed   RuntimeError: boom",
        "cell                  status",
        f"{KEYS[0]}    done     mask AP 12.5",
        f"{KEYS[1]}  failed   RuntimeError: boom",
        "1 done · 1 failed of 2",
        "worker logs: LOGS"]
