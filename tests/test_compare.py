"""cxrlab compare: runs side by side from MLflow, aliases, sorting, heatmap robustness, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cxrlab.callbacks.explanations.eigen import robustness
from cxrlab.experiments.cli.main import main
from cxrlab.experiments.evaluation.compare import compare_runs, format_comparison, resolve_metric
from cxrlab.experiments.evaluation.report import text_table
from cxrlab.experiments.tracking.store import resolve_uri

CLASSES = ["covid", "normal", "virus"]


def _heatmaps(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random raw heatmap set: [12, 3, 8, 8] and four images per class."""
    rng = np.random.default_rng(seed)
    return rng.random((12, len(CLASSES), 8, 8)).astype(np.float32), np.repeat(np.arange(3), 4)


def _log_heatmaps(
    client: Any, run_id: str, epoch: int, maps: np.ndarray, labels: np.ndarray, tmp: Path
) -> None:
    folder = tmp / f"{run_id}_{epoch}"
    folder.mkdir()
    np.savez(folder / "heatmaps.npz", heatmaps=maps, labels=labels, classes=np.array(CLASSES))
    client.log_artifact(run_id, str(folder / "heatmaps.npz"), f"explain/epoch_{epoch:03d}")


def _run(
    client: Any,
    experiment: str,
    name: str,
    metrics: dict[str, list[float]],
    tags: dict[str, str],
    params: dict[str, str],
) -> str:
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    for key, values in metrics.items():
        for step, value in enumerate(values):
            client.log_metric(run_id, key, value, step=step)
    for key, value in {"classes": ",".join(CLASSES), **params}.items():
        client.log_param(run_id, key, value)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, isolate: Any) -> Any:
    """Runs a (vgg16) and b (densenet201) in 'study', c in 'other'; the cwd is the store's."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("compare")
    with isolate(root):
        client = MlflowClient(resolve_uri())
        a = _run(
            client,
            "study",
            "vgg",
            {
                "test/acc": [0.8],
                "test/macro_f1": [0.7],
                "test/recall/covid": [0.9],
                "test/recall/normal": [0.6],
                "val/macro_f1": [0.6, 0.5],
                "best/val/macro_f1": [0.75],
                "explain/aopc": [0.1, 0.2],
                "best/explain/aopc": [0.25],
            },
            {
                "cxrlab.kind": "train",
                "backbone": "vgg16",
                "head": "maxpool-mlp",
                "finetune": "frozen",
            },
            {},
        )
        b = _run(
            client,
            "study",
            "dense",
            {
                "test/acc": [0.9],
                "test/macro_f1": [0.6],
                "test/recall/covid": [0.8],
                "test/recall/normal": [0.7],
                "val/macro_f1": [0.7],
                "explain/aopc": [0.3],
            },
            {"cxrlab.kind": "train"},
            {
                "model.backbone": "densenet201",
                "model.head": "maxpool-mlp",
                "model.finetune": "frozen",
            },
        )
        c = _run(client, "other", "eval", {"test/acc": [0.5]}, {"cxrlab.kind": "evaluate"}, {})
        maps, labels = _heatmaps(1)
        _log_heatmaps(client, a, 0, _heatmaps(0)[0], labels, root)
        _log_heatmaps(client, a, 1, maps, labels, root)
        # b's maps are a's last epoch scaled: every correlation with it is exactly 1.
        _log_heatmaps(client, b, 0, 3.0 * maps, labels, root)
        yield {"a": a, "b": b, "c": c, "root": root, "maps": maps, "labels": labels}


def test_table_has_both_runs_with_aliases_and_best_values(store: dict[str, Any]) -> None:
    result = compare_runs("study", metrics="test/recall,test/f1,explain/aopc,val/f1", out="cmp")
    table = result["table"].set_index("run_name")
    assert list(table.columns) == [
        "run_id",
        "kind",
        "backbone",
        "head",
        "finetune",
        "alarm",
        "test/recall/covid",
        "test/recall/normal",
        "test/macro_f1",
        "explain/aopc",
        "val/macro_f1",
    ]
    assert table.loc["vgg", "run_id"] == store["a"] and table.loc["dense", "run_id"] == store["b"]
    assert (
        table.loc["vgg", "backbone"] == "vgg16" and table.loc["dense", "backbone"] == "densenet201"
    )
    # best/<metric> wins where logged; otherwise the last value.
    assert table.loc["vgg", "explain/aopc"] == 0.25 and table.loc["dense", "explain/aopc"] == 0.3
    assert table.loc["vgg", "val/macro_f1"] == 0.75 and table.loc["dense", "val/macro_f1"] == 0.7
    assert table.loc["dense", "test/recall/normal"] == 0.7
    csv = pd.read_csv("cmp/compare.csv")
    pd.testing.assert_frame_equal(csv, result["table"], check_dtype=False)
    md = Path("cmp/compare.md").read_text()
    assert "| run_id | run_name | kind | backbone |" in md
    assert f"| {store['a']} | vgg | train | vgg16 |" in md and f"| {store['b']} | dense |" in md


def test_sorting(store: dict[str, Any]) -> None:
    by_f1 = compare_runs("study", metrics="test/acc", sort="test/f1", out="s1")["table"]
    assert by_f1["run_name"].tolist() == ["vgg", "dense"] and "test/macro_f1" in by_f1.columns
    by_acc = compare_runs("study", metrics="test/acc", sort="test/acc", out="s2")["table"]
    assert by_acc["run_name"].tolist() == ["dense", "vgg"]
    up = compare_runs("study", metrics="test/acc", sort="test/acc", ascending=True, out="s3")[
        "table"
    ]
    assert up["run_name"].tolist() == ["vgg", "dense"]
    with pytest.raises(ValueError, match="names 2 metrics"):
        compare_runs("study", sort="test/recall", out="s4")


def test_cli_prints_table_and_rejects_unknown_metrics(
    store: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", store["a"], store["c"], "--metrics", "test/acc", "--out", "cli"]) == 0
    out = capsys.readouterr().out
    assert store["a"][:8] in out and store["c"][:8] in out and "0.8" in out and "0.5" in out
    assert main(["compare", "--experiment", "study", "--metrics", "test/acc,test/aopc"]) == 2
    err = capsys.readouterr().err
    assert "cxrlab: error: --metrics/--sort 'test/aopc' is not logged" in err and "test/acc" in err
    assert main(["compare", "--experiment", "study", "--kind", "evaluate"]) == 2
    assert "no runs to compare" in capsys.readouterr().err


def test_heatmap_robustness_uses_each_runs_last_epoch(store: dict[str, Any]) -> None:
    result = compare_runs(
        run_ids=[store["a"], store["b"]], metrics="test/acc", heatmaps=True, out="hm"
    )
    table = result["robustness"]
    maps, labels = store["maps"], store["labels"]
    pd.testing.assert_frame_equal(
        table, robustness((maps, labels, CLASSES), (3.0 * maps, labels, CLASSES))
    )
    # b's maps are a's last epoch scaled: with a's first epoch these would not all be 1.
    assert np.allclose(table["average_corr"], 1.0)
    diagonal = table[table["image_class"] == table["heatmap_class"]]
    assert np.allclose(diagonal["pc1_corr"], 1.0)
    assert pd.read_csv("hm/heatmap_robustness.csv").shape == (9, 4)
    assert store["b"] in Path("hm/heatmap_robustness.md").read_text()
    assert "heatmap robustness" in format_comparison(result)


def test_compare_heatmaps_is_an_alias_of_explain_compare(store: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    a, b = store["a"], store["b"]
    assert main(["compare", a, b, "--metrics", "test/acc", "--heatmaps", "--out", "alias"]) == 0
    assert main(["explain", "compare", a, b, "--out", "documented"]) == 0
    for name in ("heatmap_robustness.csv", "heatmap_robustness.md"):
        assert Path("alias", name).read_text() == Path("documented", name).read_text()
    printed = capsys.readouterr().out
    assert printed.count("mean average-heatmap correlation (same class): 1.000") == 2


def test_heatmap_errors(store: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=f"run {store['c']} has no explain/.*heatmaps.npz"):
        compare_runs(run_ids=[store["a"], store["c"]], metrics="test/acc", heatmaps=True, out="e1")
    with pytest.raises(ValueError, match="exactly two runs, got 3"):
        compare_runs("study", [store["c"]], metrics="test/acc", heatmaps=True, out="e2")


def test_run_selection_errors(store: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"give --experiment NAME or RUN_IDs .*'other', 'study'"):
        compare_runs(out="e3")
    with pytest.raises(ValueError, match="--experiment 'nope' not found"):
        compare_runs("nope", out="e4")
    with pytest.raises(ValueError, match="run 'deadbeef' not found"):
        compare_runs(run_ids=["deadbeef"], out="e5")


def test_resolve_metric_order() -> None:
    available = {
        "test/macro_f1",
        "test/f1/covid",
        "test/recall/covid",
        "test/recall/normal",
        "test/auroc",
    }
    assert resolve_metric("test/f1", available) == ["test/macro_f1"]
    assert resolve_metric("test/auc", available) == ["test/auroc"]
    assert resolve_metric("test/recall", available) == ["test/recall/covid", "test/recall/normal"]
    assert resolve_metric("test/sensitivity", available) == [
        "test/recall/covid",
        "test/recall/normal",
    ]
    with pytest.raises(ValueError, match="did you mean test/auroc"):
        resolve_metric("test/aurocc", available)


def test_text_table_aligns_numbers_right_and_text_left() -> None:
    table = pd.DataFrame({"run": ["a", "bbbb"], "acc": [0.91234, float("nan")], "n": [3, 40]})
    assert text_table(table).splitlines() == [
        "run      acc   n",
        "----  ------  --",
        "a     0.9123   3",
        "bbbb       —  40",
    ]
