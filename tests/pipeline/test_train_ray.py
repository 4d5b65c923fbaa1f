"""Real Ray Train runs with 2 CPU workers: tracking end to end, and kill-and-resume.

One local Ray cluster serves the module (starting one costs 5–10 s, stopping 4 s). Two runs of
the same tiny configuration, the second with a worker killed mid-run (`train.crash_at_iter`);
both are kept for the assertions below. Ray's fixed cost is ≈20–30 s per run on 2 cores.
Meanwhile every socket the cluster's processes listen on is sampled: a local run is no network
service.
"""
import json
import os
from pathlib import Path

import pytest
import ray
import torch
from mlflow import MlflowClient

from pipeline.eval.model_files import MODEL_FILE
from pipeline.ray_utils import LOCAL_ONLY_ENV, init_ray
from pipeline.tracking import CELL_KEY_TAG, PARENT_TAG, open_run, resolve_tracking_uri
from pipeline.train.loop import CRASH_MARKER
from pipeline.train.run import run_training
from tests.pipeline.listening import ListeningSampler, is_loopback
from tests.pipeline.train_support import tiny_config

pytestmark = pytest.mark.slow

ITERS = 12
CKPT_EVERY = 4
CRASH_AT = 6  # rank 1 dies before step 6; the run restarts from the checkpoint of step 4
EVAL_EVERY = 5
METRIC_KEYS = [f"{t}/{m}" for t in ("segm", "bbox")
               for m in ("AP", "AP50", "AP75", "APS", "APM", "APL",
                         "oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN")] + \
    ["fps", "num_anchors", "train_time"]


@pytest.fixture(scope="module")
def listening():
    with ListeningSampler() as sampler:
        yield sampler.seen


@pytest.fixture(scope="module")
def cluster(listening):
    started = init_ray(num_cpus=2, object_store_bytes=256 * 2**20)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("ray_runs")


def _cfg(root: Path, *extra: str):
    # eval.eval_every: the mid-training evaluations run under DDP too (and must not change a thing)
    return tiny_config(root, "train.num_workers=2", f"train.max_iters={ITERS}",
                       f"train.checkpoint_every={CKPT_EVERY}", "train.log_every=2",
                       f"eval.eval_every={EVAL_EVERY}", *extra)


@pytest.fixture(scope="module")
def parent(root):
    return open_run(_cfg(root).tracking, run_name="parent")


@pytest.fixture(scope="module")
def uninterrupted(cluster, root, parent):
    return run_training(_cfg(root), run_name="plain", parent_run_id=parent.run_id,
                        tags={CELL_KEY_TAG: "cell-a"})


@pytest.fixture(scope="module")
def interrupted(cluster, root):
    return run_training(_cfg(root, f"train.crash_at_iter={CRASH_AT}", "train.crash_rank=1"),
                        run_name="crashy")


def _weights(result) -> dict[str, torch.Tensor]:
    return torch.load(Path(result["checkpoint"]) / MODEL_FILE, weights_only=True)


def test_two_worker_run_is_fully_tracked(uninterrupted, root, parent):
    cfg = _cfg(root)
    client = MlflowClient(resolve_tracking_uri(cfg.tracking))
    run = client.get_run(uninterrupted["run_id"])
    assert run.info.status == "FINISHED"
    missing = [k for k in METRIC_KEYS if k not in run.data.metrics]
    assert not missing, missing
    assert run.data.metrics["num_anchors"] > 0 and run.data.metrics["fps"] > 0
    assert all(-1.0 <= run.data.metrics[k] <= 100.0 for k in METRIC_KEYS if "/" in k)
    assert run.data.metrics["train/restarts"] == 0 and run.data.metrics["train/skipped_steps"] == 0
    # where the wall time went: the parts add up to the whole, each part positive
    t = {k.removeprefix("time/"): v for k, v in run.data.metrics.items() if k.startswith("time/")}
    assert min(t.values()) > 0 and t["cell"] >= t["training"] + t["evaluation"] + t["logging"]
    assert t["startup"] == pytest.approx(t["cell"] - t["training"] - t["evaluation"] - t["logging"])
    assert t["overhead"] == pytest.approx(1 - t["training"] / t["cell"])
    # every config value is a param; the tags name the cell
    assert len(run.data.params) == len(cfg.flat())
    assert run.data.params["train.num_workers"] == "2"
    tags = run.data.tags
    assert (tags["scale"], tags["assigner"], tags["seed"]) == ("128", cfg.train.assigner, "0")
    assert tags["git_commit"] and tags[PARENT_TAG] == parent.run_id and tags[CELL_KEY_TAG] == "cell-a"
    # losses and LR per logging step, logged by the Train controller's callback
    for key in ("train/loss", "train/loss_cls", "train/loss_box", "train/loss_mask", "train/lr"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == list(range(2, ITERS + 1, 2)), key
    for key in ("segm/AP", "bbox/oLRP"):  # mid-training evaluations (2 workers), then the final one
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == [5, 10, ITERS], key
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "train/lr")]
    assert lrs[0] < max(lrs) and lrs[-1] < max(lrs)  # warm-up, then the preset's cosine decay
    # artifacts: config, COCO results, overlays, final plain state_dict
    arts = {a.path for d in (None, "config", "evaluation", "overlays", "checkpoint")
            for a in client.list_artifacts(run.info.run_id, d)}
    assert {"config/config.json", "evaluation/coco_results.json", "evaluation/metrics.json",
            "checkpoint/model.pt"} <= arts
    assert len([a for a in arts if a.startswith("overlays/") and a.endswith(".png")]) == 2
    local = Path(client.download_artifacts(run.info.run_id, "evaluation/coco_results.json"))
    results = json.loads(local.read_text())
    assert all({"image_id", "category_id", "bbox", "score", "segmentation"} <= set(r) for r in results)
    state = torch.load(client.download_artifacts(run.info.run_id, "checkpoint/model.pt"),
                       weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in _weights(uninterrupted).items())


def test_killed_worker_is_restarted_and_the_run_ends_with_identical_weights(
        uninterrupted, interrupted, root):
    marker = root / "ray" / "crashy" / CRASH_MARKER.format(CRASH_AT)
    assert marker.exists()  # the worker really died once
    m = interrupted["metrics"]
    assert m["train/restarts"] == 1
    assert m["train/resumed_from"] == CKPT_EVERY  # the last checkpoint before the crash
    a, b = _weights(uninterrupted), _weights(interrupted)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    assert m["segm/AP"] == uninterrupted["metrics"]["segm/AP"]


def test_rerun_of_a_finished_run_returns_it(uninterrupted, root):
    again = run_training(_cfg(root), run_name="plain")
    assert again["reused"] and again["run_id"] == uninterrupted["run_id"]
    assert again["metrics"]["segm/AP"] == uninterrupted["metrics"]["segm/AP"]
    with pytest.raises(ValueError, match="another configuration"):
        run_training(_cfg(root, "train.lr=0.5"), run_name="plain")


TIMING = ("fps", "train_time", "wall_time", "time/")  # time/…: pipeline.train.phases


@pytest.mark.parametrize("workers", [1, 2])
def test_logged_metrics_equal_jobs_evaluate_on_the_final_checkpoint(workers, cluster, root, uninterrupted,
                                                                    tmp_path):
    from pipeline.eval.evaluate import evaluate_checkpoint

    result = uninterrupted if workers == 2 else run_training(
        _cfg(root, "train.num_workers=1"), run_name="one-worker")
    again = evaluate_checkpoint(result["checkpoint"], out_dir=tmp_path)
    same = {k: v for k, v in again.items() if isinstance(v, float) and not k.startswith(TIMING)}
    assert len(same) >= 20
    assert same == {k: result["metrics"][k] for k in same}  # digit for digit


def test_the_local_cluster_listens_on_loopback_only(listening, uninterrupted):
    """GCS, raylet, agents, every worker, the Train workers' process group (gloo and torch's
    TCPStore): 127.0.0.1 only, during a 2-worker run (and whatever else the module ran before)."""
    from ray._private import ray_constants

    names = " ".join(listening.values())
    assert "gcs_server" in names and "raylet" in names and "RayTrainWorker" in names, names
    exposed = {f"{ip}:{port}": name for (ip, port), name in listening.items() if not is_loopback(ip)}
    assert not exposed, exposed
    # Ray's local-only mode was only on while the cluster started (`ray start` refuses it)
    assert LOCAL_ONLY_ENV not in os.environ and ray_constants.ENABLE_RAY_CLUSTER
