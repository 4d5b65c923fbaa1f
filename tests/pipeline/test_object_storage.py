"""Checkpoints in object storage: a real S3 API (moto's server, on 127.0.0.1) behind
`train.storage_path=s3://…`, as cluster.yaml asks of users. A Ray Train worker killed mid-run
restarts from the checkpoint the run wrote to the bucket."""
import boto3
import pytest
import ray
import torch
from moto.server import ThreadedMotoServer

from pipeline.eval.model_files import MODEL_FILE
from pipeline.ray_utils import init_ray
from pipeline.storage import filesystem
from pipeline.train.loop import CRASH_MARKER
from pipeline.train.run import run_training
from tests.pipeline.train_support import tiny_config

pytestmark = pytest.mark.slow

BUCKET = "maskaware-test"
CRASH_AT = 6  # the checkpoint of iteration 4 is in the bucket by then
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        # before Ray starts: its processes (Train controller, workers) inherit the endpoint
        for k, v in {**AWS_ENV, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            mp.setenv(k, v)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield boto3.client("s3")
    server.stop()


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_a_run_resumes_from_its_checkpoint_in_s3(s3, tmp_path):
    assert init_ray(num_cpus=2, object_store_bytes=256 * 2**20)  # our own cluster, with the env above
    try:
        cfg = tiny_config(tmp_path, f"train.storage_path=s3://{BUCKET}/runs", "train.num_workers=1",
                          f"train.crash_at_iter={CRASH_AT}", "eval.overlays=0")
        result = run_training(cfg, run_name="s3-run")
    finally:
        ray.shutdown()
    m = result["metrics"]
    assert m["train/restarts"] == 1 and m["train/resumed_from"] == 4  # read back from the bucket
    keys = _keys(s3, "runs/s3-run/")
    assert f"runs/s3-run/{CRASH_MARKER.format(CRASH_AT)}" in keys  # the worker really died once
    assert any(k.endswith(f"/{MODEL_FILE}") for k in keys)
    assert result["checkpoint"].startswith(f"s3://{BUCKET}/runs/s3-run/")
    fs, path = filesystem(result["checkpoint"])
    with fs.open_input_file(f"{path}/{MODEL_FILE}") as f:
        state = torch.load(f, weights_only=True)
    assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not (tmp_path / "ray").exists()  # nothing went to the local default
