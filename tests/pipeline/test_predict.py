"""jobs.predict on images, folders with bad files, globs, video and MLflow run ids (real pillow, PyAV, MLflow)."""
import json

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from jobs import predict as predict_job
from pipeline.data.synthetic import categories
from pipeline.eval.model_files import CONFIG_FILE, MODEL_FILE
from tests.pipeline.predict_support import IMAGE_SIZES, save_tiny_checkpoint, write_images

MAX_PER_IMG = 100  # EvalConfig's default max_per_img


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "iter_0000001")


def _run(capsys, *argv) -> tuple[int, dict | None, str]:
    code = predict_job.main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def _predict(capsys, ckpt, inputs, out, *extra) -> tuple[int, dict | None, str]:
    return _run(capsys, "--checkpoint", str(ckpt), "--input", str(inputs), "--out", str(out), *extra)


def _load(out, name):
    return json.loads((out / name).read_text())


def test_folder_with_a_corrupt_image_and_a_text_file(ckpt, tmp_path, capsys):
    folder = tmp_path / "photos"
    paths = write_images(folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("hello")
    out = tmp_path / "pred"
    code, summary, err = _predict(capsys, ckpt, folder, out, "--batch-size", "2")
    assert code == 0, err
    assert "broken.jpg" in err and "cannot decode" in err and "notes.txt: not an image" in err
    assert summary["images"] == 3 and summary["failed"] == 1 and summary["skipped"] == 1
    assert any("notes.txt: not an image" in p for p in summary["problems"])
    for path, (h, w) in zip(paths, IMAGE_SIZES):  # one overlay per good image, at its own size
        assert Image.open(out / "overlays" / f"{path.stem}.png").size == (w, h)
    results, bbox, segm = (_load(out, f"{name}_results.json") for name in ("coco", "bbox", "segm"))
    images = {im["id"]: im for im in _load(out, "images.json")}
    # ids number the image files in sorted order, broken.jpg (id 1) included: stable across runs
    assert sorted(images) == [2, 3, 4] and summary["detections"] == len(results) > 0
    assert [r["bbox"] for r in results] == [b["bbox"] for b in bbox] and "segmentation" not in bbox[0]
    assert [r["segmentation"] for r in results] == [s["segmentation"] for s in segm] and "bbox" not in segm[0]
    assert {r["category_id"] for r in results} <= {c["id"] for c in categories()}
    for r in results:  # RLE masks at the original size; boxes inside the image
        im = images[r["image_id"]]
        assert mask_utils.decode(r["segmentation"]).shape == (im["height"], im["width"])
        x, y, w, h = r["bbox"]
        assert 0 <= x and x + w <= im["width"] + 1e-3 and 0 <= y and y + h <= im["height"] + 1e-3
    per_image = np.bincount([r["image_id"] for r in results])
    assert per_image.max() <= MAX_PER_IMG


def test_overlay_draws_the_confident_detections(ckpt, tmp_path, capsys):
    path = write_images(tmp_path / "in", sizes=[(70, 90)])[0]
    hidden, drawn = tmp_path / "hidden", tmp_path / "drawn"
    assert _predict(capsys, ckpt, path, hidden, "--draw-thr", "1.01")[0] == 0
    assert _predict(capsys, ckpt, path, drawn, "--draw-thr", "0")[0] == 0
    original = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(hidden / "overlays" / "img0.png")), original)
    assert not np.array_equal(np.asarray(Image.open(drawn / "overlays" / "img0.png")), original)


def test_glob_picks_the_matching_files_and_numeric_names_give_coco_ids(ckpt, tmp_path, capsys):
    write_images(tmp_path / "in", sizes=[(50, 60)], suffix=".jpg")
    for stem in ("000000000139", "000000000285"):
        write_images(tmp_path / "tmp", sizes=[(60, 50)])[0].rename(tmp_path / "in" / f"{stem}.png")
    code, summary, err = _predict(capsys, ckpt, tmp_path / "in" / "*.png", tmp_path / "pred")
    assert code == 0, err
    assert summary["images"] == 2 and summary["problems"] == []
    assert sorted(im["id"] for im in _load(tmp_path / "pred", "images.json")) == [139, 285]


def test_empty_folder_and_missing_input_are_refused_before_loading(ckpt, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _predict(capsys, ckpt, tmp_path / "empty", tmp_path / "o")
    assert code == 2 and "holds no image" in err and "found nothing" in err
    code, _, err = _predict(capsys, tmp_path / "nope", tmp_path / "empty", tmp_path / "o")
    assert code == 2 and "holds no image" in err  # the input is checked first
    code, _, err = _predict(capsys, ckpt, tmp_path / "nope.jpg", tmp_path / "o")
    assert code == 2 and "does not exist" in err
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = _predict(capsys, ckpt, tmp_path / "notes.txt", tmp_path / "o")
    assert code == 2 and "notes.txt is neither an image" in err
    assert not (tmp_path / "o").exists()


def test_checkpoint_of_another_class_count_is_refused(ckpt, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / MODEL_FILE).write_bytes((ckpt / MODEL_FILE).read_bytes())  # 4 classes
    cfg = json.loads((ckpt / CONFIG_FILE).read_text())
    cfg["model"]["num_classes"] = 3
    (other / CONFIG_FILE).write_text(json.dumps(cfg))
    write_images(tmp_path / "in", sizes=[(40, 40)])
    code, _, err = _predict(capsys, other, tmp_path / "in", tmp_path / "o")
    assert code == 2
    assert "its weights have 4 classes, its config model.num_classes=3" in err and len(err.strip().splitlines()) == 1


def _write_video(path, frames: int, h: int, w: int):
    rng = np.random.default_rng(0)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.height, stream.width, stream.pix_fmt = h, w, "yuv420p"
        for i in range(frames):
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_gives_an_overlay_video_and_results_per_frame(ckpt, tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    _write_video(clip, frames=5, h=48, w=64)
    code, summary, err = _predict(capsys, ckpt, clip, tmp_path / "pred", "--batch-size", "2")
    assert code == 0, err
    assert summary["images"] == 5
    with av.open(summary["outputs"]["video"]) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3)
    assert sorted(im["id"] for im in _load(tmp_path / "pred", "images.json")) == [1, 2, 3, 4, 5]
    assert {r["image_id"] for r in _load(tmp_path / "pred", "coco_results.json")} <= {1, 2, 3, 4, 5}


@pytest.mark.slow  # MLflow's first sqlite store: ~30 s on the loaded 2-core machine
def test_mlflow_run_id_and_its_model_pt(ckpt, tmp_path, capsys):
    from pipeline.config import TrackingConfig
    from pipeline.tracking import open_run, sqlite_uri

    uri = sqlite_uri(tmp_path / "mlflow.db")
    run = open_run(TrackingConfig(tracking_uri=uri, experiment="predict"), run_name="r")
    run.log_artifact(ckpt / MODEL_FILE, "checkpoint")  # the layout `pipeline.train.run` logs
    run.log_artifact(ckpt / CONFIG_FILE, "config")
    run.finish()
    path = write_images(tmp_path / "in", sizes=[(60, 60)])[0]
    by_dir = _predict(capsys, ckpt, path, tmp_path / "a")
    by_run = _predict(capsys, run.run_id, path, tmp_path / "b", "--tracking-uri", uri)
    assert by_dir[0] == by_run[0] == 0, by_run[2]
    assert _load(tmp_path / "a", "coco_results.json") == _load(tmp_path / "b", "coco_results.json")
    code, _, err = _predict(capsys, "0" * 32, path, tmp_path / "c", "--tracking-uri", uri)
    assert code == 2 and f"MLflow run {'0' * 32} has no artifact checkpoint/{MODEL_FILE}" in err
