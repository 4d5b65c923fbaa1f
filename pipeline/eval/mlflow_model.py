"""A trained model as an MLflow 3 model (`pyfunc` flavour): what `mlflow.pyfunc.load_model` predicts with.

    model = mlflow.pyfunc.load_model(f"models:/{model_id}")   # or f"runs:/{run_id}/model"
    detections = model.predict(images)  # uint8 [B, H, W, 3] RGB, one size per call (image[None]
                                        # for one; MLflow refuses other shapes and dtypes)

Output: a DataFrame with one row per detection (`OUTPUT_COLUMNS`): the image's index in the batch,
the dataset's `category_id` and name, the score, the box `x, y, w, h` and the mask as COCO RLE
`counts` at the input image's size (`pycocotools.mask.decode({"size": [H, W], "counts": …})`).
It is the evaluation's own path: the eval resize (`pipeline.data.augment.transform`), the network,
`model.postprocess` and the COCO results conversion, on CPU.

An MLflow-edge module (tests/test_import_rules.py MLFLOW_OK): the `PythonModel` class must live
where MLflow may be imported and calls down into `pipeline.eval`. The model's artifacts are the
checkpoint's `model.pt` and `config.json` and `categories.json` (label -> category id, name); the
code is not copied in: load it where maskaware is installed. Logged with an explicit client and run
id (a LoggedModel that is the run's output), never through the fluent active run.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from pipeline.config import Config
from pipeline.data.augment import AugmentParams, transform
from pipeline.data.coco import load_image
from pipeline.data.datasets import load_split
from pipeline.eval.coco_eval import predictions_to_coco_results
from pipeline.eval.evaluate import predict
from pipeline.eval.model_files import CONFIG_FILE, MODEL_FILE, build_model, fit_weights, read_state_dict
from pipeline.eval.runtime import inference_model, inference_precision

MODEL_NAME = "model"  # `runs:/<run id>/model`
CATEGORIES_FILE = "categories.json"
EXAMPLE_PX = 96  # the input example: a crop of the first val image (kept small: it is JSON)
OUTPUT_COLUMNS = (("image", "long"), ("category_id", "long"), ("category", "string"), ("score", "double"),
                  ("x", "double"), ("y", "double"), ("w", "double"), ("h", "double"), ("mask", "string"))
SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),  # [B, H, W, 3] RGB
    outputs=Schema([ColSpec(t, name) for name, t in OUTPUT_COLUMNS]))
REQUIREMENTS = ("torch", "numpy", "pandas", "pycocotools", "mlflow")


class YolactPyfunc(mlflow.pyfunc.PythonModel):
    """YOLACT with its post-processing: images in, COCO-style detections out (module docstring)."""

    def load_context(self, context) -> None:
        ckpt = Path(context.artifacts["checkpoint"])
        self.cfg = Config.from_dict(json.loads((ckpt / CONFIG_FILE).read_text()))
        cats = json.loads(Path(context.artifacts["categories"]).read_text())
        self.label_to_category, self.names = cats["label_to_category"], cats["names"]
        self.model = fit_weights(build_model(self.cfg, load_pretrained=False), read_state_dict(ckpt), self.cfg,
                                 str(ckpt)).eval()
        self.precision = inference_precision(torch.device("cpu"), False, self.cfg.eval.precision)  # as evaluation
        self.net = inference_model(self.model, self.precision)

    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        images = np.asarray(model_input)  # MLflow has checked it against SIGNATURE: uint8 [B, H, W, 3]
        aug = AugmentParams(scale=self.cfg.data.scale, train=False)
        no_gt = ([], np.zeros(0, np.int64), np.zeros((0, 4), np.float32))
        batch = np.stack([transform(img, *no_gt, aug).image for img in images])  # [B, 3, S, S]
        preds = predict(self.net, torch.from_numpy(batch), [img.shape[:2] for img in images], self.cfg.eval,
                        self.precision)
        for i, p in enumerate(preds):
            p["image_id"] = i
        results = predictions_to_coco_results(preds, self.label_to_category)
        name = dict(zip(self.label_to_category, self.names))
        rows = [(r["image_id"], r["category_id"], name[r["category_id"]], r["score"], *r["bbox"],
                 r["segmentation"]["counts"]) for r in results]
        frame = pd.DataFrame(rows, columns=[c for c, _ in OUTPUT_COLUMNS])
        return frame.astype({"image": "int64", "category_id": "int64"})


def _categories_and_example(cfg: Config) -> tuple[dict, np.ndarray]:
    """The val split's category table and a small crop of its first image."""
    val = load_split(cfg.data, "val")
    first = val.records[0]
    example = load_image(first.path, first.image_id)[:EXAMPLE_PX, :EXAMPLE_PX]  # [h, w, 3]
    cats = {"label_to_category": [int(c) for c in val.label_to_category], "names": list(val.category_names)}
    return cats, np.ascontiguousarray(example)[None]  # [1, h, w, 3]


def log_pyfunc_model(uri: str, run_id: str, checkpoint: Path, cfg: Config, step: int = 0) -> str:
    """Log the checkpoint directory (`model.pt`, `config.json`) as the run's MLflow model; its id."""
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id,
                                        model_type="yolact")
    cats, example = _categories_and_example(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp) / "checkpoint"
        files.mkdir()
        for name in (MODEL_FILE, CONFIG_FILE):
            shutil.copyfile(checkpoint / name, files / name)  # not state.pt nor the evaluation files
        (Path(tmp) / CATEGORIES_FILE).write_text(json.dumps(cats))
        local = Path(tmp) / MODEL_NAME
        mlflow.pyfunc.save_model(
            str(local), python_model=YolactPyfunc(),
            artifacts={"checkpoint": str(files), "categories": str(Path(tmp) / CATEGORIES_FILE)},
            signature=SIGNATURE, input_example=example,
            pip_requirements=[f"{p}=={version(p)}" for p in REQUIREMENTS],
            mlflow_model=Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                               run_id=run_id, model_id=logged.model_id))
        client.log_model_artifacts(logged.model_id, str(local))
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step)])
    client.finalize_logged_model(logged.model_id, "READY")
    return logged.model_id
