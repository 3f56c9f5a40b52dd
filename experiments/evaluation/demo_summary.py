"""The last lines of `make demo`: the clean and the shortcut model side by side on the clean test
split, and whether each came out as the demo expects, in words.

    python -m cxrlab.experiments.evaluation.demo_summary [--experiment phantom-demo] [--tracking_uri URI]
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from cxrlab.experiments.evaluation.compare import metric_value
from cxrlab.experiments.tracking import store

# What the demo shows: the shortcut model reads its markers, so on clean images it loses at least
# this much accuracy, and only it raises the alarm.
MIN_ACCURACY_DROP = 0.2
ROWS = (  # (label, metric of the evaluate run on the clean test split, or of the train run)
    ("accuracy", "test/acc", "evaluate"),
    ("lung focus", "test/explain/lung_focus", "evaluate"),
    ("border focus", "test/explain/border_focus", "evaluate"),
    ("lesion focus", "test/explain/lesion_focus", "evaluate"),
    ("AOPC gap (val probe)", "explain/aopc_gap", "train"),
    ("out of distribution", "test/trust/ood_share", "evaluate"),
    ("atypical heatmaps", "test/trust/atypical_share", "evaluate"),
)


def _newest(client: Any, experiment_id: str, query: str) -> Any:
    found = client.search_runs([experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"])
    if not found:
        raise ValueError(f"no run matches {query!r}; run `make demo` first")
    return found[0]


def demo_runs(client: Any, experiment: str) -> dict[str, dict[str, Any]]:
    """{clean|shortcut: {train: run, evaluate: its newest evaluate run}}."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"experiment {experiment!r} not found; run `make demo` first")
    runs = {}
    for name in ("clean", "shortcut"):
        train = _newest(client, exp.experiment_id, f"attributes.run_name = '{name}'")
        done = _newest(client, exp.experiment_id, f"tags.`cxrlab.train_run_id` = '{train.info.run_id}'")
        runs[name] = {"train": train, "evaluate": done}
    return runs


def summary(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The side-by-side table (under 100 columns) and the verdict line."""
    def value(name: str, key: str, kind: str) -> str:
        v = metric_value(runs[name][kind], key)
        return "—" if math.isnan(v) else f"{v:.3f}"

    alarms = {n: runs[n]["evaluate"].data.tags.get("cxrlab.shortcut_alarm", "—") for n in runs}
    lines = ["", "The demo's two models on the clean test split:", f"  {'':<22}{'clean':>10}{'shortcut':>10}"]
    lines += [f"  {label:<22}{value('clean', key, kind):>10}{value('shortcut', key, kind):>10}" for label, key, kind in ROWS]
    lines.append(f"  {'shortcut alarm':<22}{alarms['clean']:>10}{alarms['shortcut']:>10}")
    drop = metric_value(runs["clean"]["evaluate"], "test/acc") - metric_value(runs["shortcut"]["evaluate"], "test/acc")

    def mark(ok: bool) -> str:
        return "✓" if ok else "✗ (not as expected)"

    lines.append(
        f"clean: no alarm {mark(alarms['clean'] == 'no')} | shortcut: alarm {mark(alarms['shortcut'] == 'yes')}, "
        f"accuracy drop {drop:.2f} {mark(drop >= MIN_ACCURACY_DROP)}"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the demo's summary."""
    from mlflow import MlflowClient

    parser = argparse.ArgumentParser(description="the two demo models side by side, and whether each is as expected")
    parser.add_argument("--experiment", default="phantom-demo", help="the demo's MLflow experiment [default: phantom-demo]")
    parser.add_argument("--tracking_uri", default=None, help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db]")
    ns = parser.parse_args(argv)
    try:
        print("\n".join(summary(demo_runs(MlflowClient(store.resolve_uri(ns.tracking_uri)), ns.experiment))))
    except ValueError as e:
        print(f"cxrlab demo summary: error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
