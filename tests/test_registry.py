"""A choice added by one decorated function, outside the package: a toy heatmap method in a
temporary module shows in --help, passes and fails validation, and is explained at epoch end."""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from cxrlab.config import METHODS, ConfigError, load_config
from cxrlab.experiments.cli.main import build_parser, main
from cxrlab.experiments.tracking.store import resolve_uri

TOY = '''
import torch.nn.functional as F

import cxrlab


@cxrlab.heatmap_method("toy", per_class=False)
def toy(model, layer, images, *, batch_size=None):
    """The brightness of each 8x8 cell: a model-free map, one per image."""
    return F.avg_pool2d(images.mean(1, keepdim=True), 8)
'''


@pytest.fixture
def toy_method(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "toy_heatmaps.py").write_text(TOY)
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("toy_heatmaps")
        yield "toy"
    finally:
        METHODS.unregister("toy")
        sys.modules.pop("toy_heatmaps", None)
        sys.path.remove(str(tmp_path))


def test_a_registered_method_is_listed_validated_and_explained(
    toy_method: str, in_tmp_cwd: Path, folder_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    help_text = " ".join(sub.choices["train"].format_help().split())
    assert "(each one of gradcam, gradcampp, activation, occlusion, edge, toy)" in help_text

    assert load_config(overrides={"explain.methods": "gradcam,toy"}).explain.methods == ["gradcam", "toy"]
    with pytest.raises(ConfigError, match=r"explain.methods has 'toyy'; choose from .*toy \(did you mean 'toy'\?\)"):
        load_config(overrides={"explain.methods": "toyy"})

    assert main(["train", "--config", "ci_tiny", "--data.root", str(folder_tree), "--explain.methods", "gradcam,toy"]) == 0
    client = MlflowClient(resolve_uri())
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "explain/epoch_000")}
    assert "explain/epoch_000/heatmaps_toy.png" in artifacts
    npz = client.download_artifacts(run.info.run_id, "explain/epoch_000/heatmaps.npz", str(in_tmp_cwd))
    toy_maps = np.load(io.BytesIO(Path(npz).read_bytes()))["heatmaps_toy"]
    assert toy_maps.shape[1:] == (1, 4, 4)  # ci_tiny's 32 px input in 8 px cells, one map per image


def test_a_plugin_unregistered_is_gone(toy_method: str) -> None:
    assert "toy" in METHODS.names()
    METHODS.unregister("toy")
    with pytest.raises(ConfigError, match="explain.methods has 'toy'"):
        load_config(overrides={"explain.methods": "toy"})
