"""fps measurement: warm-up and run counts, round-robin inputs, median, device naming, errors."""
from __future__ import annotations

import time

import pytest
import torch

from pipeline.eval.speed import describe_device, measure_fps


def test_counts_inputs_and_median():
    seen = []
    # Every 5th timed call is slow: the median ignores it, the max does not.
    delays = iter([0.0] * 2 + [0.03 if i % 5 == 0 else 0.002 for i in range(10)])

    def fn(x):
        seen.append(x)
        time.sleep(next(delays))

    r = measure_fps(fn, ["a", "b", "c"], warmup=2, runs=10, precision="bf16-autocast")
    assert seen == ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "b", "c"]
    assert 2.0 <= r["ms_median"] < 25.0 <= r["ms_max"]
    assert r["fps"] == pytest.approx(1000.0 / r["ms_median"])
    assert (r["runs"], r["warmup"], r["batch_size"], r["precision"]) == (10, 2, 1, "bf16-autocast")
    assert r["device"].startswith("cpu (")


def test_runs_without_autograd_on_a_model():
    model = torch.nn.Linear(8, 2)
    grads = []
    r = measure_fps(lambda x: grads.append(model(x).requires_grad), [torch.randn(1, 8)], warmup=1, runs=3)
    assert grads == [False] * 4 and r["fps"] > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(inputs=[]), "inputs is empty"),
    (dict(runs=0), "runs >= 1"),
    (dict(warmup=-1), "warmup >= 0"),
    (dict(fn=3), "callable"),
])
def test_bad_arguments(kwargs, match):
    args = dict(fn=lambda x: x, inputs=[1], warmup=0, runs=1) | kwargs
    with pytest.raises(ValueError, match=match):
        measure_fps(args.pop("fn"), args.pop("inputs"), **args)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_time_includes_queued_kernels():
    # Without synchronisation the timer would stop while the matmuls are still queued.
    a = torch.randn(4096, 4096, device="cuda")
    r = measure_fps(lambda x: [x @ x for _ in range(20)], [a], warmup=2, runs=5, device="cuda")
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        a @ a
    end.record()
    torch.cuda.synchronize()
    assert r["ms_median"] >= 0.5 * start.elapsed_time(end)
    assert describe_device("cuda").startswith("cuda:0 (")
