"""The best checkpoint as an MLflow pyfunc (CXRPyfunc): what `mlflow.pyfunc.load_model`, the
registry and `mlflow models serve` run, with only the `cxrlab` package installed. It predicts
through the same `predict_arrays` as `cxrlab predict`, so both give the same probabilities."""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from cxrlab.datamodules.image_header import film_problem
from cxrlab.datamodules.images import Decoding, read_image, read_image_bytes
from cxrlab.experiments.tracking.writer import RunWriter
from cxrlab.lightning_modules.checkpoint import load_classifier

CHECKPOINT = "checkpoint"  # the artifact key of the slim checkpoint inside the logged model
COLUMNS = ("image", "path")  # the input columns, one of which a request carries
EXAMPLE_SIDE = 64  # the input example's long side: a thumbnail keeps the logged model small
# The verdicts predict_arrays adds to every prediction, after the class probabilities.
TRUST = {
    "in_distribution": "boolean", "ood_score": "double", "template_corr": "double",
    "explanation_typical": "boolean", "shortcut_flag": "boolean", "trust": "string", "refused": "string",
}
# The request params: a Grad-CAM map per image; and predict DICOMs whose header is no frontal chest film.
PARAMS = {"heatmap": False, "force": False}


def bad_input(message: str) -> Exception:
    """The error a bad request raises: `mlflow models serve` answers it with 400 and this line."""
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class CXRPyfunc(mlflow.pyfunc.PythonModel):
    """A cxrlab classifier as a pyfunc: a DataFrame with an `image` column (encoded PNG/JPEG/DICOM
    bytes) or a `path` column, or a float32 [N, 1, H, W] array in [0, 1], in; one row per image out
    (label, confidence, p_<class>, the trust verdicts; with params heatmap=true, gradcam)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Rebuild the classifier from the checkpoint artifact, on the CPU."""
        self.model = load_classifier(context.artifacts[CHECKPOINT])
        self.decoding = Decoding.from_data(self.model.config.data)  # DICOM windows as in training

    # model_input may also be a float32 array (see _decode); the hint names the DataFrame alone,
    # since mlflow reads any other hint as an input schema and warns at import.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per input image: the predicted class, per-class probabilities and trust verdicts."""
        from cxrlab.experiments.evaluation.predict import predict_arrays

        params = PARAMS | dict(params or {})
        raws, names, problems = self._decode(model_input)
        refused = [p for p in problems if p]
        if refused and not params["force"]:
            raise bad_input(f"{refused[0]}; send params {{\"force\": true}} to predict it anyway")
        results = predict_arrays(self.model, raws, names, heatmap=bool(params["heatmap"]), forced=problems)
        return output_frame(results, self.model.classes)

    def _decode(self, model_input: Any) -> tuple[list[np.ndarray], list[str], list[str | None]]:
        """The images of a request as [H, W] arrays in [0, 1], their names and DICOM header problems."""
        if isinstance(model_input, np.ndarray):
            return *array_images(model_input), [None] * len(model_input)
        if not isinstance(model_input, pd.DataFrame):
            raise bad_input(f"input is a {type(model_input).__name__}; send a DataFrame with an `image` "
                            "or `path` column, or a float32 array [N, 1, H, W]")
        column = next((c for c in COLUMNS if c in model_input.columns), None)
        if column is None or model_input.empty:
            found = ", ".join(map(str, model_input.columns)) or "none"
            raise bad_input(f"input has {len(model_input)} rows and columns [{found}]; send one row per image "
                            "in an `image` column (PNG/JPEG/DICOM bytes, base64 in JSON) or a `path` column")
        raws, names, problems = [], [], []
        for i, value in enumerate(model_input[column]):
            try:
                if column == "path":
                    name, data = str(value), None
                    raws.append(read_image(name, self.decoding))
                else:
                    name, data = f"image[{i}]", encoded_bytes(value, i)
                    raws.append(read_image_bytes(data, name, self.decoding))
            except (ValueError, FileNotFoundError) as err:
                raise bad_input(str(err)) from None
            names.append(name)
            problems.append(film_problem(data if data is not None else name, name))
        return raws, names, problems


def encoded_bytes(value: Any, row: int) -> bytes:
    """The file bytes of one `image` cell: bytes as sent, or a base64 string (a request read
    without the signature, e.g. through unwrap_python_model)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            pass
    raise bad_input(f"image[{row}]: expected the encoded file's bytes (base64 in JSON), got {type(value).__name__}")


def array_images(batch: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
    """The [H, W] images of a float [N, 1, H, W] array in [0, 1], named array[i]."""
    if batch.ndim != 4 or batch.shape[1] != 1 or batch.shape[0] == 0 or not np.issubdtype(batch.dtype, np.floating):
        raise bad_input(f"array input of shape {list(batch.shape)} and dtype {batch.dtype}; send float32 "
                        "[N, 1, H, W] (N >= 1 grayscale images) with values in [0, 1]")
    if np.nanmin(batch) < 0.0 or np.nanmax(batch) > 1.0 or np.isnan(batch).any():
        raise bad_input("array input has values outside [0, 1]; scale the images to [0, 1] (pixel / max)")
    return [np.asarray(b[0], dtype=np.float32) for b in batch], [f"array[{i}]" for i in range(len(batch))]


def output_frame(results: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> pd.DataFrame:
    """predict_arrays' dicts as rows: image, label, confidence, p_<class>..., the trust verdicts
    (and gradcam when asked for)."""
    rows = []
    for r in results:
        row = {"image": r["image"], "label": r["label"], "confidence": r["confidence"]}
        row |= {f"p_{c}": r["probabilities"][c] for c in classes}
        row |= {k: r.get(k) for k in TRUST}
        if "gradcam" in r:
            row["gradcam"] = r["gradcam"]
        rows.append(row)
    return pd.DataFrame(rows)


def signature(classes: Sequence[str]) -> Any:
    """The model signature: optional `image` (bytes) and `path` columns in, a row per image out,
    and the heatmap/force params."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    inputs = Schema([ColSpec("binary", "image", required=False), ColSpec("string", "path", required=False)])
    outputs = [ColSpec("string", "image"), ColSpec("string", "label"), ColSpec("double", "confidence")]
    outputs += [ColSpec("double", f"p_{c}") for c in classes]
    outputs += [ColSpec(kind, name, required=False) for name, kind in TRUST.items()]
    outputs.append(ColSpec(Array(Array("double")), "gradcam", required=False))
    params = ParamSchema([ParamSpec(name, "boolean", default) for name, default in PARAMS.items()])
    return ModelSignature(inputs=inputs, outputs=Schema(outputs), params=params)


def example_png(image_path: str | Path, decoding: Decoding) -> bytes:
    """A thumbnail PNG of a training image: the logged model's input example."""
    from PIL import Image

    raw = read_image(image_path, decoding)
    img = Image.fromarray((raw * 255).round().astype(np.uint8))
    img.thumbnail((EXAMPLE_SIDE, EXAMPLE_SIDE))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def requirements() -> list[str]:
    """What the served model needs installed: the cxrlab package (it brings torch and mlflow)."""
    try:
        return [f"cxrlab=={version('cxrlab')}"]
    except PackageNotFoundError:
        return ["cxrlab"]


def log_served_model(run: RunWriter, checkpoint: str | Path, classes: Sequence[str], decoding: Decoding,
                     example_image: str | Path, metrics: Mapping[str, float], step: int = 0) -> str:
    """Log a slim checkpoint of a model with `classes`, whose images decode by `decoding`, as the
    run's logged model `model`, with `metrics` linked at `step`; returns the model id."""
    example = pd.DataFrame({"image": [example_png(example_image, decoding)]})
    return run.log_model(
        CXRPyfunc(), {CHECKPOINT: str(checkpoint)}, signature(classes), example, metrics, requirements(), step=step
    )
