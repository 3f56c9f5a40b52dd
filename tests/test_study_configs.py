"""Each reproduced study's config trains one step on a fixture tree of the dataset it names,
with only sizes, epochs and batches overridden (and weights: none: tests never download)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dataset_trees as trees
import mlflow
import multilabel_trees
import pytest

from cxrlab.experiments.cli.main import main

# config -> (tree writer, data.root inside the written folder, input size, AOPC region side, source).
# VGG16 + maxpool(4) needs a 4x4 feature map (128 px); AOPC regions shrink with the input so the
# config's step count still fits the grid (a size override, not a change of method).
STUDIES: dict[str, tuple[Callable[[Path], Path], int, int, str]] = {
    "lucas2021_vgg19_4class": (trees.write_combined, 32, 8, "combine"),
    "balvinsson2021_backbones_binary": (trees.write_kermany, 32, 8, "kermany"),
    "lamprou_aopc_4class": (trees.write_covid_radiography, 128, 25, "covid_radiography"),
    "kusakunniran_resnet101_scratch": (trees.write_covid_radiography, 32, 8, "covid_radiography"),
    "chexpert_densenet121": (multilabel_trees.write_chexpert, 32, 8, "chexpert"),
}


@pytest.mark.parametrize("config", list(STUDIES))
def test_study_config_trains_on_its_dataset(config: str, in_tmp_cwd: Path) -> None:
    write, size, region, source = STUDIES[config]
    root = write(in_tmp_cwd / "download")
    args = [
        "train", "--config", config, "--data.root", str(root), "--model.weights", "none",
        "--data.image_size", str(size), "--explain.aopc.region", str(region), "--explain.display_size", "32",
        "--trainer.max_epochs", "1", "--data.batch_size", "8", "--data.num_workers", "0",
        "--explain.probe_per_class", "2",
        "--trainer.enable_progress_bar", "false",
    ]
    assert main(args) == 0
    client = mlflow.MlflowClient(f"sqlite:///{in_tmp_cwd / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    assert run.data.params["data.source"] == source and int(run.data.params["data.n_train"]) > 0
    per_source = dict(kv.split(":") for kv in run.data.params["data.images_per_source"].split(","))
    assert set(per_source) == ({"coronahack", "cohen"} if source == "combine" else {source})
