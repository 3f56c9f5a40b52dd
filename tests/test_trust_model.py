"""The trust model of a trained phantom model: out-of-distribution inputs are flagged and phantom
films pass; predict and evaluate report it; old checkpoints and bad files are handled. One
model for the module (its margins hold for CXRLAB_LEARNING_SEED=0..2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import LEARNING_SEED
from foreign import foreign_inputs
from PIL import Image
from samples import write_dicom

from cxrlab.datamodules.datamodule import CXRDataModule
from cxrlab.datamodules.images import read_image
from cxrlab.datamodules.phantom import generate_phantom
from cxrlab.experiments.cli.main import main
from cxrlab.experiments.evaluation.predict import predict_arrays
from cxrlab.lightning_modules.checkpoint import TRUST_KEY, load_classifier

SIZE = 64


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, isolate: Any) -> Any:
    """(root, phantom data, checkpoint) of phantom_demo trained on a small phantom set."""
    root = tmp_path_factory.mktemp("trust")
    generate_phantom(root / "phantom", n_per_class=60, size=SIZE, seed=LEARNING_SEED, progress=False)
    with isolate(root):
        args = ["train", "--config", "phantom_demo", "--data.root", str(root / "phantom"), "--seed", str(LEARNING_SEED),
                "--trainer.max_epochs", "6", "--data.num_workers", "0", "--explain.enabled", "false", "--quiet"]
        assert main(args) == 0
        ckpt = max(Path("mlruns/checkpoints").glob("*/*/checkpoints/best-*.ckpt"), key=lambda p: p.stat().st_mtime)
        yield root, root / "phantom", ckpt.resolve()


@pytest.fixture(scope="module")
def fresh(trained: Any) -> list[np.ndarray]:
    """Phantom films the model never saw: the run's test split (split as training split them) and a
    new phantom set of another seed, so the flagged share is measured on enough films to be stable."""
    model = load_classifier(trained[2])
    rows = CXRDataModule(model.config.data, seed=model.config.seed).split_table("test")
    unseen = trained[0] / "unseen"
    more = generate_phantom(unseen, n_per_class=25, size=SIZE, seed=LEARNING_SEED + 100, progress=False)
    return [read_image(p) for p in [*rows["path"], *(unseen / p for p in more["path"])]]


def test_phantom_films_pass_and_foreign_inputs_are_flagged(trained: Any, fresh: list[np.ndarray]) -> None:
    model = load_classifier(trained[2])
    on_phantom = predict_arrays(model, fresh, [f"phantom {i}" for i in range(len(fresh))])
    flagged = np.mean([not r["in_distribution"] for r in on_phantom])
    assert flagged <= 0.10, f"{flagged:.0%} of the phantom test split flagged out of distribution"
    shares = {}
    for kind, images in foreign_inputs(fresh).items():
        rows = predict_arrays(model, images, [kind] * len(images))
        shares[kind] = np.mean([not r["in_distribution"] for r in rows])
    assert all(s >= 0.9 for s in shares.values()), shares


def test_predict_prints_trust_and_summary_and_json_carries_every_field(
    trained: Any, fresh: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    root, data, ckpt = trained
    noise = root / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (SIZE, SIZE), dtype=np.uint8)).save(noise)
    films = sorted((data / "images").rglob("*.png"))[:2]
    assert main(["predict", str(ckpt), *map(str, films), str(noise)]) == 0
    out = capsys.readouterr().out
    assert f"{noise}: " in out and "OUT OF DISTRIBUTION" in out
    assert "1 of 3 images are out of distribution: their predictions are not reliable" in out
    assert main(["predict", str(ckpt), str(noise), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["predictions"][0]
    assert row["trust"] == "ok" and row["in_distribution"] is False and row["ood_score"] > 1
    assert {"template_corr", "explanation_typical", "shortcut_flag", "refused"} <= row.keys()


def test_calibrated_probabilities_are_the_temperature_scaled_softmax(trained: Any, fresh: list[np.ndarray]) -> None:
    model = load_classifier(trained[2])
    trust = torch.load(trained[2], map_location="cpu", weights_only=True)[TRUST_KEY]
    row = predict_arrays(model, fresh[:1], ["x"])[0]
    from cxrlab.datamodules.transforms import eval_transform

    x = eval_transform(model.input_size, model.config.data.crop_margin)(torch.from_numpy(fresh[0])[None])[None]
    with torch.no_grad():
        want = (model(x) / trust["temperature"]).softmax(1)[0]
    assert np.allclose([row["probabilities"][c] for c in model.classes], want.numpy(), atol=1e-5)


def test_dicom_header_refuses_a_ct_and_force_marks_the_row(
    trained: Any, fresh: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, ckpt = trained
    pixels = (fresh[0] * 4095).astype(np.uint16)
    ct = write_dicom(root / "slice.dcm", pixels, modality="CT")
    lateral = write_dicom(root / "lateral.dcm", pixels, ViewPosition="LL")
    film = write_dicom(root / "film.dcm", pixels, modality="DX", ViewPosition="PA", BodyPartExamined="CHEST")
    assert main(["predict", str(ckpt), str(ct), str(lateral), str(film)]) == 1
    out = capsys.readouterr().out
    assert f"{ct}: DICOM Modality is CT, not a radiograph (CR, DR, DX): refused; --force predicts it anyway" in out
    assert f"{lateral}: DICOM ViewPosition is LL, not a frontal (PA or AP) film" in out
    assert "2 of 3 images refused" in out and f"{film}: " in out
    assert main(["predict", str(ckpt), str(ct), "--force", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["predictions"][0]
    assert row["label"] is not None and "Modality is CT" in row["refused"]


def test_a_checkpoint_without_a_trust_model_still_predicts(
    trained: Any, fresh: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    root, data, ckpt = trained
    old = torch.load(ckpt, map_location="cpu", weights_only=True)
    del old[TRUST_KEY]
    torch.save(old, root / "old.ckpt")
    film = str(sorted((data / "images").rglob("*.png"))[0])
    assert main(["predict", str(root / "old.ckpt"), film]) == 0
    assert "trust unavailable (checkpoint written before trust models)" in capsys.readouterr().out
    assert main(["predict", str(root / "old.ckpt"), film, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["predictions"][0]
    assert row["trust"] == "unavailable" and row["in_distribution"] is None and row["template_corr"] is None


def test_a_corrupt_image_is_one_line(trained: Any, capsys: pytest.CaptureFixture[str]) -> None:
    root, _, ckpt = trained
    bad = root / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["predict", str(ckpt), str(bad)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cxrlab: error: {bad}: unreadable image"), err


def test_evaluate_on_foreign_films_warns_loudly_at_the_top(
    trained: Any, fresh: list[np.ndarray], capsys: pytest.CaptureFixture[str], isolate: Any
) -> None:
    """A phantom model evaluated on other films (here inverted phantoms in class folders): the
    report and the terminal open with the out-of-distribution warning; on its own test split not."""
    root, data, ckpt = trained
    with isolate(root):
        assert main(["evaluate", str(ckpt), "--n_boot", "10", "--quiet", "--out", "own"]) == 0
        own = json.loads((root / "own" / "metrics.json").read_text())["trust"]
        assert not own["foreign"] and own["ood_share"] <= 0.2
        table = pd.read_csv(data / "metadata.csv")
        other = root / "other"
        for path, label in zip(table["path"], table["label"], strict=True):
            (other / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(255 - np.asarray(Image.open(data / path))).save(other / label / Path(path).name)
        capsys.readouterr()
        assert main(["evaluate", str(ckpt), "--data.root", str(other), "--data.source", "folder", "--split", "all",
                     "--n_boot", "10", "--quiet", "--out", "foreign"]) == 0
        out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("WARNING: ") and "out of distribution" in out[1]
    report = (root / "foreign" / "report.html").read_text()
    assert report.index('class="banner alarm"') < report.index("<nav>")
    metrics = json.loads((root / "foreign" / "metrics.json").read_text())["trust"]
    assert metrics["foreign"] and metrics["ood_share"] >= 0.9
    assert (root / "foreign" / "trust.csv").is_file()


@pytest.mark.slow
def test_the_shortcut_models_heatmaps_are_atypical_on_clean_films(tmp_path: Path, isolate: Any) -> None:
    """The demo at its own scale: the shortcut model's templates were learnt on its markers, so on
    clean films its heatmaps leave them more often than the clean model's do (seed 0: 100 % of
    clean films atypical against 11 %). Two demo trainings: minutes."""
    fresh_table = generate_phantom(tmp_path / "fresh", n_per_class=20, size=128, seed=100 + LEARNING_SEED, progress=False)
    films = [read_image(tmp_path / "fresh" / p) for p in fresh_table["path"]]
    atypical = {}
    for name, shortcut in (("clean", 0.0), ("shortcut", 0.9)):
        data = tmp_path / name
        generate_phantom(data, n_per_class=100, size=128, seed=LEARNING_SEED, shortcut=shortcut, progress=False)
        (tmp_path / f"runs-{name}").mkdir()
        with isolate(tmp_path / f"runs-{name}"):
            args = ["train", "--config", "phantom_demo", "--data.root", str(data), "--seed", str(LEARNING_SEED),
                    "--data.num_workers", "0", "--explain.enabled", "false", "--quiet"]
            assert main(args) == 0
            ckpt = max(Path("mlruns/checkpoints").glob("*/*/checkpoints/best-*.ckpt"), key=lambda p: p.stat().st_mtime)
            rows = predict_arrays(load_classifier(ckpt), films, ["film"] * len(films))
        atypical[name] = np.mean([r["explanation_typical"] is False for r in rows])
    assert atypical["shortcut"] > atypical["clean"] + 0.2, atypical
