"""cxrlab predict: text and JSON output, Grad-CAM overlays, lung masks, DICOM, bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from samples import PNG_MAGIC, write_dicom
from tiny_training import train_tiny

from cxrlab.callbacks.trust.model_trust import trust_of
from cxrlab.config import Config, DataConfig
from cxrlab.experiments.cli.main import main
from cxrlab.experiments.evaluation.inference import judge_table, predict_table
from cxrlab.experiments.evaluation.predict import lung_masks, predict
from cxrlab.lightning_modules.checkpoint import load_classifier

# 64 px input gives resnet18 a 2x2 Grad-CAM layer; the frozen random backbone trains in seconds.
TRAIN = (
    "--data.image_size", "64", "--model.finetune", "frozen", "--model.lr", "0.05",
    "--explain.enabled", "false",
)  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, csv_dataset: Path, isolate: Any) -> Any:
    """(root, images folder, checkpoint) with the cwd in root for the whole module."""
    root = tmp_path_factory.mktemp("predict")
    with isolate(root):
        ckpt, _ = train_tiny(csv_dataset, *TRAIN)
        yield root, csv_dataset.parent / "images", ckpt


def _predict_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["predict", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_text_output_names_class_confidences_and_cutoff(
    trained: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, data, ckpt = trained
    image = str(data / "covid_000.png")
    assert main(["predict", str(ckpt), image, "--cutoff", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{image}: ") and "(>= cut-off 0); " in lines[0] and "heatmap" in lines[0]
    assert all(
        f"{c} 0." in lines[1] or f"{c} 1." in lines[1] for c in ("covid", "normal", "pneumonia")
    )


def test_json_matches_batched_inference(trained: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, data, ckpt = trained
    images = [str(data / f"{c}_001.png") for c in ("normal", "pneumonia", "covid")]
    out = _predict_json(capsys, str(ckpt), *images, "--cutoff", "0.5")
    model = load_classifier(ckpt)
    rows = pd.DataFrame({"path": images, "label": "normal"})
    raw, verdicts = judge_table(model, rows, model.config.data, trust_of(model), progress=False)
    assert np.allclose(raw, predict_table(model, rows, model.config.data, progress=False), atol=1e-6)
    # predict reports the temperature-scaled probabilities of the trust model.
    expected = verdicts[[f"calibrated_p_{c}" for c in model.classes]].to_numpy()
    assert [p["image"] for p in out["predictions"]] == images
    for row, probs in zip(out["predictions"], expected, strict=True):
        got = np.array([row["probabilities"][c] for c in model.classes])
        assert np.allclose(got, probs, atol=1e-6)
        assert row["label"] == model.classes[int(probs.argmax())]
        assert row["confidence"] == pytest.approx(probs.max(), abs=1e-6)
        assert row["passes_cutoff"] == (row["confidence"] >= 0.5)
        assert row["heatmap"] is None


def test_checkpoint_of_an_older_config_loads_with_the_schema_defaults(trained: Any, tmp_path: Path) -> None:
    """Checkpoints keep the config as a plain dict; one written before a key existed rebuilds a
    typed Config whose missing keys hold the schema's defaults, and predicts the same."""
    _, data, ckpt = trained
    old = torch.load(ckpt, map_location="cpu", weights_only=True)
    config = old["hyper_parameters"]["config"]
    for section, key in [("data", "dicom_window"), ("data", "max_pixels"), ("explain", "alarm")]:
        del config[section][key]
    torch.save(old, tmp_path / "old.ckpt")
    model = load_classifier(tmp_path / "old.ckpt")
    assert isinstance(model.config, Config)
    assert model.config.data.max_pixels == DataConfig().max_pixels and model.config.explain.alarm.enabled
    images = [str(data / f"{c}_001.png") for c in ("normal", "covid")]
    expected = [r["probabilities"] for r in predict(ckpt, images, device="cpu")]
    assert [r["probabilities"] for r in predict(tmp_path / "old.ckpt", images, device="cpu")] == expected


def test_heatmap_overlay_is_limited_to_the_lung_mask(
    trained: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, data, ckpt = trained
    image = data / "pneumonia_002.png"
    lung = data.parent / "masks" / image.name
    out = _predict_json(
        capsys, str(ckpt), str(image), "--heatmap", "maps", "--lung_mask", str(lung)
    )
    panel = Path(out["predictions"][0]["heatmap"])  # the original beside the overlay, captioned
    assert panel == Path("maps/pneumonia_002_gradcam.png") and panel.read_bytes()[:8] == PNG_MAGIC
    assert Image.open(panel).size[0] > 2 * Image.open(image).size[0]
    path = Path(out["predictions"][0]["overlay"])  # the bare overlay, at the image's size
    assert path == Path("maps/pneumonia_002_overlay.png")
    rgb = np.asarray(Image.open(path)).astype(int)
    gray = np.asarray(Image.open(image)).astype(int)
    assert rgb.shape == (32, 32, 3)
    inside = np.asarray(Image.open(lung)) > 0
    assert 0.1 < inside.mean() < 0.9
    # Outside the mask the radiograph is untouched; inside, the colour map is blended in.
    assert (rgb[~inside] == gray[~inside][:, None]).all()
    coloured = (rgb[inside].max(axis=1) - rgb[inside].min(axis=1)) > 3
    assert coloured.mean() > 0.9
    unmasked = _predict_json(capsys, str(ckpt), str(image), "--heatmap", "maps_all")
    whole = np.asarray(Image.open(unmasked["predictions"][0]["overlay"])).astype(int)
    assert (whole[inside] == rgb[inside]).all() and (whole[~inside] != rgb[~inside]).any()


def test_dicom_predicts_like_the_same_png(trained: Any, capsys: pytest.CaptureFixture[str]) -> None:
    root, data, ckpt = trained
    pixels = np.asarray(Image.open(data / "covid_003.png")).copy()
    pixels[0, 0], pixels[0, 1] = 0, 255  # full range: DICOM min-max scaling then equals /255
    Image.fromarray(pixels).save(root / "same.png")
    # A secondary capture without a window decodes min-max (a raw DX would get percentiles).
    write_dicom(root / "same.dcm", pixels.astype(np.uint16) * 257, modality="OT")  # a secondary capture: predict needs --force
    out = _predict_json(capsys, str(ckpt), "same.png", "same.dcm", "--heatmap", "dcm_maps", "--force")
    png, dcm = out["predictions"]
    assert dcm["label"] == png["label"]
    for c, p in png["probabilities"].items():
        assert dcm["probabilities"][c] == pytest.approx(p, abs=1e-5)
    assert Path(dcm["heatmap"]).read_bytes()[:8] == PNG_MAGIC


def test_unreadable_image_exits_2_naming_it(
    trained: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    root, data, ckpt = trained
    (root / "broken.png").write_bytes(b"not an image at all")
    assert main(["predict", str(ckpt), str(data / "normal_000.png"), "broken.png"]) == 2
    assert "cxrlab: error: broken.png: unreadable image" in capsys.readouterr().err
    assert main(["predict", str(ckpt), "missing.png"]) == 2
    assert "missing.png: image file not found" in capsys.readouterr().err


def test_lung_masks_one_for_all_or_one_each() -> None:
    assert lung_masks([], 2) == [None, None]
    assert lung_masks(["m.png"], 3) == ["m.png"] * 3
    assert lung_masks(["a.png", "b.png"], 2) == ["a.png", "b.png"]
    with pytest.raises(ValueError, match="--lung_mask given 2 times for 3 images"):
        lung_masks(["a.png", "b.png"], 3)
