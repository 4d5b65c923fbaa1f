"""The sweep grid, its record and its command line (no Ray here; see test_sweep_e2e.py)."""
from dataclasses import replace

import pytest

from jobs import sweep as sweep_cli
from pipeline.config import ASSIGNER_NAMES, Config, SweepConfig, apply_overrides
from pipeline.presets import get_preset
from pipeline.sweep.grid import Cell, cell_config, collapsed_rows, grid_cells, validate_sweep
from pipeline.sweep.record import SweepRecord, latest_sweep, sweep_dir


def _cfg(**sweep) -> Config:
    return replace(Config(), sweep=replace(SweepConfig(), **sweep))


def test_grid_is_the_cross_product_in_table_order():
    cfg = _cfg(scales=(400, 550), assigners=("fixed_iou", "atss_maiou"), seeds=(0, 1))
    keys = [c.key for c in grid_cells(cfg)]
    assert keys == ["s400-fixed_iou-seed0", "s400-fixed_iou-seed1", "s400-atss_maiou-seed0",
                    "s400-atss_maiou-seed1", "s550-fixed_iou-seed0", "s550-fixed_iou-seed1",
                    "s550-atss_maiou-seed0", "s550-atss_maiou-seed1"]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("preset,cells", [("tiny", 4), ("synthetic", 6 * 3 * 3), ("paper", 6 * 3), ("gmayolact", 6),
                                          ("mayolact", 6)])
def test_presets_grid_sizes(preset, cells):
    cfg = get_preset(preset)
    assert len(grid_cells(cfg)) == cells
    assert set(cfg.sweep.assigners) <= set(ASSIGNER_NAMES)


def test_tiny_has_at_least_two_scales_and_two_assigners():
    sw = get_preset("tiny").sweep
    assert len(sw.scales) >= 2 and len(sw.assigners) >= 2


def test_mayolact_rows_are_cumulative_table4():
    cfg = get_preset("mayolact")
    cells = grid_cells(cfg)
    assert [c.variant for c in cells] == ["yolact", "atss_maiou", "carafe", "dcnv2", "more_anchors", "cosine"]
    assert [c.assigner for c in cells] == ["fixed_iou"] + ["atss_maiou"] * 5
    cfgs = [cell_config(cfg, c, "m") for c in cells]
    assert [c.model.carafe for c in cfgs] == [False, False, True, True, True, True]
    assert [c.model.dcn_interval for c in cfgs] == [0, 0, 0, 1, 1, 1]
    assert [c.model.anchor_grid for c in cfgs] == ["auto"] * 4 + ["mayolact"] * 2
    assert [c.train.schedule for c in cfgs] == ["step"] * 5 + ["cosine"]
    assert cfgs[-1].train.lr == pytest.approx(8e-3) and cfgs[0].train.lr == pytest.approx(4e-3)
    assert all(c.data.scale == 550 for c in cfgs)


def test_variant_assigner_wins_and_duplicates_collapse():
    cfg = _cfg(scales=(550,), assigners=("atss_iou", "atss_maiou"), variants=("yolact",))
    assert [c.key for c in grid_cells(cfg)] == ["s550-fixed_iou-yolact-seed0"]
    # ... and says so: the collapse is printed by --dry-run and when the sweep starts
    assert collapsed_rows(cfg) == ["row 'yolact' fixes train.assigner=fixed_iou: the 2 assigners of "
                                   "sweep.assigners give it 1 cell per (scale, seed)"]
    assert collapsed_rows(_cfg(assigners=("atss_iou",), variants=("yolact",))) == []


def test_cli_dry_run_prints_the_grid_without_starting_ray(capsys, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("--dry-run started Ray"))
    assert sweep_cli.main(["--dry-run", "--preset", "tiny", "--set", "sweep.seeds=0,1"]) == 0
    out = capsys.readouterr().out.splitlines()
    cells = [ln.split() for ln in out[1:-1]]
    assert cells[0] == ["96", "atss_iou", "-", "0"] and len(cells) == 8
    assert out[-1] == "8 cells (2 scales × 2 assigners × 2 seeds)"
    assert sweep_cli.main(["--dry-run", "--preset", "mayolact", "--set", "sweep.assigners=atss_iou,atss_maiou"]) == 0
    out = capsys.readouterr().out
    assert "row 'carafe' fixes train.assigner=atss_maiou" in out
    assert out.splitlines()[-1] == "6 cells (1 scales × 2 assigners × 6 rows × 1 seeds = 12, less the collapsed rows above)"


def test_cell_config_sets_the_cell_and_a_per_sweep_storage_path():
    base = apply_overrides(Config(), ["train.storage_path=s3://bucket/runs/"])
    cfg = cell_config(base, Cell(320, "atss_giou", 7), "my-sweep")
    assert (cfg.data.scale, cfg.train.assigner, cfg.train.seed) == (320, "atss_giou", 7)
    assert cfg.train.storage_path == "s3://bucket/runs/sweeps/my-sweep"
    assert cfg.model == base.model and cfg.eval == replace(base.eval, fps_runs=0)  # timed after all trials


@pytest.mark.parametrize("sweep,needle", [
    (dict(scales=()), "sweep.scales is empty"),
    (dict(assigners=("atss_foo",)), "unknown names ['atss_foo']"),
    (dict(variants=("nope",)), "sweep.variants has unknown names"),
    (dict(scales=(0,)), "positive"),
    (dict(max_concurrent_trials=0), "max_concurrent_trials"),
    (dict(name="a/b"), "may only hold"),
])
def test_bad_grids_fail_clearly(sweep, needle):
    with pytest.raises(ValueError) as e:
        validate_sweep(_cfg(**sweep))
    assert needle in str(e.value)


def test_record_round_trip_and_latest(tmp_path):
    cfg = _cfg(root=str(tmp_path))
    cells = grid_cells(cfg)
    for i, name in enumerate(["a", "b", "c"]):
        rec = SweepRecord(name=name, preset="tiny" if name != "c" else "paper", config=cfg.to_dict(),
                          cells=[c.to_dict() for c in cells], tracking_uri="sqlite:////x.db",
                          experiment="e", created=100.0 + i)
        rec.save(sweep_dir(cfg, name))
    back = SweepRecord.load(sweep_dir(cfg, "b"))
    assert back.grid == cells and back.base_config() == cfg
    assert latest_sweep(tmp_path) == "c"
    assert latest_sweep(tmp_path, "tiny") == "b"
    assert latest_sweep(tmp_path, "synthetic") is None
    (sweep_dir(cfg, "b") / "sweep.json").write_text("{broken")
    with pytest.raises(ValueError, match="unreadable"):
        SweepRecord.load(sweep_dir(cfg, "b"))
    with pytest.raises(ValueError, match="no sweep named .zzz.*the sweeps under .*: a, b, c"):
        SweepRecord.load(sweep_dir(cfg, "zzz"))


def test_cli_rejects_config_changes_on_resume(capsys):
    assert sweep_cli.main(["--resume", "--set", "train.lr=0.1"]) == 2
    assert "a resumed sweep continues with its saved config" in capsys.readouterr().err
    assert sweep_cli.main(["--resume", "--config", "mine.yaml"]) == 2
    assert "--config mine.yaml: a resumed sweep continues with its saved config" in capsys.readouterr().err


def test_cli_bad_override_is_an_error_not_a_crash(capsys):
    assert sweep_cli.main(["--set", "sweep.scale=3"]) == 2
    assert "unknown field sweep.scale" in capsys.readouterr().err


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        sweep_cli.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for opt in ("--preset", "--set", "--name", "--resume", "default: tiny", "default: off"):
        assert opt in out


def test_report_table_is_pasted_between_the_readme_markers(tmp_path):
    from jobs.report import BEGIN, END, paste_between_markers

    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\nbefore\n{BEGIN}\nold table\n{END}\nafter\n")
    paste_between_markers(readme, "| a |\n|---|\n")
    assert readme.read_text() == f"# t\n\nbefore\n{BEGIN}\n| a |\n|---|\n{END}\nafter\n"
    paste_between_markers(readme, "| b |\n")  # idempotent place, new content
    assert readme.read_text() == f"# t\n\nbefore\n{BEGIN}\n| b |\n{END}\nafter\n"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="needs exactly one"):
        paste_between_markers(readme, "x")


def test_injected_interruption_fires_after_n_trials(monkeypatch):
    """The SIGINT (Ctrl-C) and hard-exit injections fire on the N-th completed trial, and not
    at all once the variable is gone (Tune restores its pickled callbacks on resume)."""
    import os
    import signal

    from pipeline.sweep.callbacks import CRASH_ENV, EXIT_CRASHED, INTERRUPT_ENV, InterruptAfter

    got = []
    previous = signal.signal(signal.SIGINT, lambda *_: got.append("SIGINT"))
    monkeypatch.setattr(os, "_exit", lambda code: got.append(code))
    try:
        cb = InterruptAfter()
        monkeypatch.setenv(INTERRUPT_ENV, "2")
        cb.on_trial_complete(0, [], None)
        assert got == []
        cb.on_trial_complete(1, [], None)
        assert got == ["SIGINT"]
        monkeypatch.delenv(INTERRUPT_ENV)
        cb.on_trial_complete(2, [], None)
        assert got == ["SIGINT"]
        monkeypatch.setenv(CRASH_ENV, "4")
        cb.on_trial_complete(3, [], None)
        assert got == ["SIGINT", EXIT_CRASHED]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_gmayolact_rows_are_the_gmaiou_papers_table4():
    cfg = get_preset("gmayolact")
    cells = grid_cells(cfg)
    assert [c.variant for c in cells] == ["gm_yolact", "gm_atss_gmaiou", "gm_dcn", "gm_cosine", "gm_two_scales",
                                          "gmayolact"]
    assert [c.assigner for c in cells] == ["fixed_iou"] + ["atss_gmaiou"] * 5
    cfgs = [cell_config(cfg, c, "g") for c in cells]
    assert [c.model.dcn_interval for c in cfgs] == [0, 0, 1, 1, 1, 1]
    assert [c.train.schedule for c in cfgs] == ["step"] * 3 + ["cosine"] * 3
    assert [c.model.anchor_grid for c in cfgs] == ["auto"] * 4 + ["mayolact"] * 2
    assert [(c.train.loss, c.model.sigmoid_cls) for c in cfgs] == [("standard", False)] * 5 + [("rank_sort", True)]
    assert [c.train.lr for c in cfgs] == pytest.approx([4e-3] * 3 + [8e-3] * 2 + [6e-3])
    assert all(c.train.num_workers == 1 and c.data.scale == 550 for c in cfgs)
