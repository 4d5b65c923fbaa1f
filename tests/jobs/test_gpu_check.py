"""jobs.gpu_check on CPU (--smoke): every stage runs for real at tiny sizes and the summary holds
what each measured; a stage that fails or times out is recorded and the next one still runs."""
import json

import pytest
import torch

from jobs import gpu_check


@pytest.mark.slow
def test_smoke_runs_every_stage_and_writes_the_summary(tmp_path):
    out = tmp_path / "gc"
    assert gpu_check.main(["--device", "cpu", "--smoke", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["stage"] for r in summary["stages"]] == list(gpu_check.STAGES)
    assert all(r["status"] == "ok" for r in summary["stages"]) and summary["failures"] == []
    assert summary["environment"]["torch"] == torch.__version__
    f = summary["figures"]
    tests = f["cuda_tests"]  # collected from the CUDA test file, all skipped without a GPU
    assert tests["tests"] >= 1 and tests["skipped"] == tests["tests"] and tests["failures"] == 0
    for precision in ("fp32", "bf16"):
        run = f[f"train_{precision}"]
        assert run["iterations"] == gpu_check.SMOKE["iters"]
        assert run["images_per_s"] > 0 and run["eval_fps_batch1"] > 0
        assert run["fps_setup"].startswith("cpu")  # what the fps figure measured
    rows = f["bench_model"]  # fp32, and bf16 autocast where the CPU has native bf16
    assert {r["batch"] for r in rows} == {1} and rows[0]["precision"] == "fp32"
    assert [r["assigner"] for r in f["bench_train"]] == ["fixed_iou", "atss_maiou"]
    assert all(r["img_per_s"] > 0 and r["peak_memory_mib"] is None for r in f["bench_train"])
    md = (out / "summary.md").read_text()
    assert all(f"| {name} | ok |" in md for name in gpu_check.STAGES)
    assert "training bf16:" in md and "bench_train atss_maiou fp32:" in md


def test_a_timed_out_stage_is_recorded_and_the_next_one_runs(tmp_path, capsys):
    out = tmp_path / "gc"
    rc = gpu_check.main(["--device", "cpu", "--smoke", "--out", str(out), "--stages", "bench_model,data",
                         "--timeout", "bench_model=0.5"])
    assert rc == 1
    summary = json.loads((out / "summary.json").read_text())
    (model, data) = summary["stages"]
    assert model["status"] == "timed out after 0.5 s" and "log_tail" in model
    assert data["status"] == "ok" and (out / "synthetic" / "annotations" / "train.json").exists()
    assert summary["failures"] == ["bench_model"] and summary["figures"]["bench_model"] is None
    assert "## bench_model: timed out" in (out / "summary.md").read_text()


@pytest.mark.parametrize("args,needle", [
    (["--stages", "data,nope"], "unknown ['nope']"),
    (["--timeout", "data"], "expected STAGE=SECONDS"),
])
def test_bad_arguments_are_named_before_anything_runs(tmp_path, capsys, args, needle):
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path / "gc"), *args]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "gc").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_says_so(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "gc")]) == 2
    assert "--device cpu --smoke" in capsys.readouterr().err
