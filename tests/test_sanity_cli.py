"""`cxrlab explain sanity` and the sanity section of `cxrlab evaluate --explain` on a trained tiny
phantom model: the files, the MLflow run, the verdicts, and one clear line for bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient
from tiny_training import train_tiny

from cxrlab.datamodules.phantom import generate_phantom
from cxrlab.experiments.cli.main import main

METHODS = ["gradcam", "gradcampp", "activation", "occlusion", "edge"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, isolate: Any) -> Any:
    """(root, phantom data with lesion masks, best checkpoint) of ci_tiny."""
    root = tmp_path_factory.mktemp("sanity")
    generate_phantom(root / "phantom", n_per_class=10, size=32, seed=0, progress=False)
    with isolate(root):
        ckpt, _ = train_tiny(root / "phantom", "--data.num_workers", "0", "--quiet")
    return root, root / "phantom", ckpt


def test_sanity_writes_every_check_logs_a_run_and_the_edge_control_fails(
    tiny: Any, isolate: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    root, data, ckpt = tiny
    with isolate(root):
        assert main(["explain", "sanity", str(ckpt), "--data.root", str(data), "--n", "2", "--out", "out", "--quiet"]) == 0
    printed = capsys.readouterr().out
    numbers = json.loads((root / "out" / "sanity.json").read_text())
    assert list(numbers) == METHODS
    for n in numbers.values():
        assert isinstance(n["passes"], bool) and len(n["cascading"]) == len(n["independent"]) >= 2
        assert len(n["road_morf"]) == len(n["road_lerf"]) and 0 <= n["deletion_auc"] <= 1 and 0 <= n["insertion_auc"] <= 1
        assert n["pointing_game"] is not None  # the phantom has lesion masks
    # The model-free control cannot change with the weights: similarity 1 at every stage, and it fails.
    edge = numbers["edge"]
    assert not edge["passes"] and all(abs(s["spearman"] - 1) < 1e-6 for s in edge["cascading"])
    table = pd.read_csv(root / "out" / "sanity.csv")
    assert table["method"].tolist() == METHODS and table.set_index("method").loc["edge", "randomisation"] == "FAIL"
    assert (root / "out" / "sanity_similarity.png").stat().st_size and (root / "out" / "sanity_randomisation.png").stat().st_size
    assert "edge: FAILS model randomisation" in printed and printed.count("model randomisation") == len(METHODS)
    run_id = printed.split("MLflow run: ")[1].split()[0]
    run = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db").get_run(run_id)
    assert run.data.tags["cxrlab.kind"] == "sanity" and "val/sanity/edge/passes" in run.data.metrics
    assert run.data.metrics["val/sanity/edge/passes"] == 0


def test_evaluate_explain_adds_the_sanity_section(tiny: Any, isolate: Any) -> None:
    root, data, ckpt = tiny
    with isolate(root):
        args = ["evaluate", str(ckpt), "--data.root", str(data), "--explain", "--n_boot", "5", "--out", "ev", "--quiet"]
        assert main([*args, "--explain.sanity.per_class", "1"]) == 0
    report = (root / "ev" / "report.md").read_text()
    assert "## Sanity checks of the heatmaps" in report and "edge: FAILS" in report
    assert set(json.loads((root / "ev" / "metrics.json").read_text())["sanity"]) == set(METHODS)


def test_without_lesion_masks_the_localisation_columns_are_skipped_with_a_note(
    tiny: Any, isolate: Any, folder_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, ckpt = tiny
    with isolate(root):
        args = ["explain", "sanity", str(ckpt), "--data.root", str(folder_tree), "--methods", "gradcam", "--n", "1",
                "--out", "nomask", "--quiet", "--data.label_map", "{pneumonia: bacteria}"]
        assert main(args) == 0
    assert "pointing game and relevance rank accuracy skipped: the data has no lesion masks" in capsys.readouterr().out
    assert json.loads((root / "nomask" / "sanity.json").read_text())["gradcam"]["pointing_game"] is None


@pytest.mark.parametrize(("extra", "says"), [
    (["--methods", "gradcam,gradcamm"], "explain.sanity.methods has 'gradcamm'"),
    (["--explain.occlusion.window", "64"], "explain.occlusion.window=64 is larger than the 32 px input"),
    (["--data.split", "[0.8, 0.2]", "--split", "test"], "the test split has no images"),
])
def test_bad_input_is_one_line(
    tiny: Any, isolate: Any, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    root, data, ckpt = tiny
    with isolate(root):
        assert main(["explain", "sanity", str(ckpt), "--data.root", str(data), "--n", "1", "--quiet", *extra]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
