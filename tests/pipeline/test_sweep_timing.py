"""The sweep's fps pass on a real MLflow store: which runs it times, and what it logs (no Ray)."""
from __future__ import annotations

from dataclasses import replace

import torch

from pipeline import tracking
from pipeline.data.datasets import dataset_dir
from pipeline.eval.model_files import build_model
from pipeline.sweep.record import SweepRecord
from pipeline.sweep.results import collect
from pipeline.sweep.timing import time_cell, untimed_runs
from tests.pipeline.train_support import tiny_config


def test_untimed_finished_cells_are_timed_once_from_their_artifacts(tmp_path):
    cfg = tiny_config(tmp_path, "eval.fps_warmup=0", "eval.fps_runs=2", "eval.max_per_img=10")
    dataset_dir(cfg.data)
    tcfg = cfg.tracking
    parent = tracking.open_run(tcfg, run_name="sweep")
    torch.manual_seed(0)
    model = build_model(cfg, load_pretrained=False).eval()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    runs = {}
    for name, status in (("done", "FINISHED"), ("failed", "FAILED"), ("timed", "FINISHED")):
        run = tracking.open_run(tcfg, run_name=name, parent_run_id=parent.run_id,
                                tags={"scale": "128", "assigner": "atss_maiou", "seed": "0", "variant": name})
        run.log_dict(cfg.to_dict(), "config/config.json")
        run.log_artifact(tmp_path / "model.pt", "checkpoint")
        if name == "timed":
            run.log_metrics({"fps": 1.0})
        run.finish(status)
        runs[name] = run.run_id
    record = SweepRecord(name="s", preset="tiny", config=cfg.to_dict(), cells=[], parent_run_id=parent.run_id,
                         tracking_uri=tracking.resolve_tracking_uri(tcfg), experiment=tcfg.experiment)
    assert untimed_runs(record) == [runs["done"]]  # not the failed one, not the one timed already

    fps = time_cell(record.tracking(), runs["done"], replace(cfg.eval, precision="fp32"), "cpu")
    assert fps["fps"] > 0 and fps["setup"].startswith(f"cpu ({cfg.train.cpus_per_worker} threads), fp32")
    assert untimed_runs(record) == []
    by_id = {r.run_id: r for r in collect(tracking.child_runs(record.tracking(), parent.run_id))}
    assert by_id[runs["done"]].metrics["fps"] == fps["fps"] and by_id[runs["done"]].fps_setup == fps["setup"]
    assert by_id[runs["timed"]].metrics["fps"] == 1.0 and by_id[runs["timed"]].fps_setup == ""
