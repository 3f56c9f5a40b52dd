"""`cxrlab compare`: runs side by side from MLflow, the heatmap robustness of two runs, and the
registration of a run's logged model (the best run's, with --register; `cxrlab register`)."""

from __future__ import annotations

import difflib
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.callbacks.explanations.shortcut import TAG as SHORTCUT_TAG
from cxrlab.experiments.evaluation.report import markdown_table, text_table
from cxrlab.experiments.evaluation.robustness import (
    heatmap_robustness,
    robustness_summary,
    write_robustness,
)
from cxrlab.experiments.tracking import store
from cxrlab.experiments.tracking.checkpoints import model_of
from cxrlab.experiments.tracking.writer import MODEL_ID_TAG, register_model

DEFAULT_METRICS = (
    "test/acc",
    "test/macro_f1",
    "test/disease_recall",
    "val/acc",
    "val/macro_f1",
    "explain/aopc",
    "explain/lung_focus",
    "explain/border_focus",
    "test/explain/lung_focus",
    "test/explain/border_focus",
)
# Short names people type for the metric names cxrlab logs (the last path component).
ALIASES = {"f1": "macro_f1", "auc": "auroc", "accuracy": "acc", "sensitivity": "recall"}
PARAMS = ("backbone", "head", "finetune")
BEST = "best/"
COMPARE_ROOT = Path("mlruns/comparisons")


# ---------------------------------------------------------------------------- runs


def find_runs(
    client: Any, experiment: str | None, run_ids: Sequence[str], kind: str = "all", alarm: str = "all"
) -> list[Any]:
    """The runs named by id plus those of an experiment; kind != 'all' keeps one cxrlab.kind,
    alarm yes|no keeps the runs whose shortcut check fired (or did not)."""
    from mlflow.exceptions import MlflowException

    if experiment is None and not run_ids:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(
            f"give --experiment NAME or RUN_IDs to compare (experiments in the store: {names})"
        )
    runs = []
    for run_id in (store.resolve_run_id(client, r) for r in run_ids):
        try:
            runs.append(client.get_run(run_id))
        except MlflowException:
            raise ValueError(
                f"run {run_id!r} not found in the tracking store; check the id and --tracking_uri"
            ) from None
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise ValueError(
                f"--experiment {experiment!r} not found; experiments in the store: {names}"
            )
        seen = {r.info.run_id for r in runs}
        found = store.all_runs(client, [exp.experiment_id], order_by=["attributes.start_time ASC"])
        runs += [r for r in found if r.info.run_id not in seen]
    if kind != "all":
        runs = [r for r in runs if r.data.tags.get("cxrlab.kind") == kind]
    if alarm not in ("all", "yes", "no"):
        raise ValueError(f"--alarm {alarm!r}: choose all, yes or no")
    if alarm != "all":
        runs = [r for r in runs if r.data.tags.get(SHORTCUT_TAG) == alarm]
    if not runs:
        raise ValueError(
            f"no runs to compare (experiment {experiment!r}, kind {kind}, alarm {alarm}); train some first"
        )
    return runs


def logged_metrics(runs: Sequence[Any]) -> set[str]:
    """Every metric name logged by the runs, best/ versions counted under their plain name too."""
    names = {k for r in runs for k in r.data.metrics}
    return names | {k.removeprefix(BEST) for k in names if k.startswith(BEST)}


def resolve_metric(name: str, available: set[str]) -> list[str]:
    """The metric columns a requested name stands for: itself, its alias, or its per-class group."""
    head, _, leaf = name.strip().rpartition("/")
    aliased = f"{head}/{ALIASES[leaf]}" if head and leaf in ALIASES else ALIASES.get(name, name)
    candidates = list(dict.fromkeys([name, aliased]))
    # An exact name (or alias) wins over a per-class group: test/f1 is test/macro_f1, not test/f1/*.
    for candidate in candidates:
        if candidate in available:
            return [candidate]
    for candidate in candidates:
        group = sorted(k for k in available if k.startswith(candidate + "/"))
        if group:
            return group
    close = difflib.get_close_matches(name, sorted(available), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(
        f"--metrics/--sort {name!r} is not logged by any of the compared runs; {hint}"
        f"logged: {', '.join(sorted(k for k in available if not k.startswith(BEST))[:25])}"
    )


def metric_value(run: Any, key: str) -> float:
    """A run's value of a metric: its best-epoch value (best/<key>) when logged, else the last."""
    metrics = run.data.metrics
    return float(metrics.get(BEST + key, metrics.get(key, np.nan)))


def _param(run: Any, name: str) -> str:
    """backbone/head/finetune from the run's tags, else from its model.* params."""
    return run.data.tags.get(name) or run.data.params.get(f"model.{name}", "")


def compare_table(
    runs: Sequence[Any],
    metrics: Sequence[str] | None = None,
    sort: str | None = None,
    ascending: bool = False,
) -> pd.DataFrame:
    """One row per run: id, name, kind, backbone, head, finetune, shortcut alarm and the chosen metrics."""
    available = logged_metrics(runs)
    if metrics:
        columns = [c for m in metrics for c in resolve_metric(m, available)]
    else:
        # The defaults are a menu: only those some run logged are shown.
        columns = [
            c for m in DEFAULT_METRICS if m in available for c in resolve_metric(m, available)
        ]
    columns = list(dict.fromkeys(columns))
    table = pd.DataFrame(
        [
            {
                "run_id": r.info.run_id,
                "run_name": r.info.run_name,
                "kind": r.data.tags.get("cxrlab.kind", ""),
                **{p: _param(r, p) for p in PARAMS},
                "alarm": r.data.tags.get(SHORTCUT_TAG, "-"),  # -: the run explained nothing
                **{c: metric_value(r, c) for c in columns},
            }
            for r in runs
        ]
    )
    if sort is not None:
        key = resolve_metric(sort, available)
        if len(key) != 1:
            raise ValueError(
                f"--sort {sort!r} names {len(key)} metrics ({', '.join(key)}); sort by one of them"
            )
        if key[0] not in table.columns:
            table[key[0]] = [metric_value(r, key[0]) for r in runs]
        table = table.sort_values(key[0], ascending=ascending, na_position="last", kind="stable")
    return table.reset_index(drop=True)


# ---------------------------------------------------------------------------- runner


def compare_runs(
    experiment: str | None = None,
    run_ids: Sequence[str] = (),
    metrics: Sequence[str] | str | None = None,
    sort: str | None = None,
    ascending: bool = False,
    out: str | Path | None = None,
    tracking_uri: str | None = None,
    heatmaps: bool = False,
    kind: str = "all",
    alarm: str = "all",
    register: str | None = None,
    alias: str | None = None,
) -> dict[str, Any]:
    """The comparison table as CSV and Markdown; with `heatmaps`, also the robustness table of the two
    runs (an alias of `cxrlab explain compare RUN_A RUN_B`: the same code writes the same files);
    with `register`, the logged model of the best run by `sort` registered under that name."""
    from mlflow import MlflowClient

    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    if alias and not register:
        raise ValueError(f"--alias {alias} moves an alias of the version --register NAME creates; add --register NAME")
    if register and sort is None:
        raise ValueError("--register registers the best run by --sort; add --sort METRIC (e.g. --sort val/macro_f1)")
    uri = store.resolve_uri(tracking_uri)
    runs = find_runs(MlflowClient(uri), experiment, run_ids, kind, alarm)
    table = compare_table(runs, metrics, sort, ascending)
    registered = register_run(uri, best_model_run(runs, table), register, alias) if register else None
    robustness, pair = None, [r.info.run_id for r in runs[:2]]
    if heatmaps:
        if len(runs) != 2:
            raise ValueError(
                f"--heatmaps compares exactly two runs, got {len(runs)}; pass two RUN_IDs"
            )
        robustness = heatmap_robustness(*pair, uri)
    out = Path(out) if out is not None else COMPARE_ROOT / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "compare.csv", out / "compare.md"]
    table.to_csv(files[0], index=False)
    note = "Values are best-epoch values (best/<metric>) where a run logged them, else the last."
    files[1].write_text(f"# Run comparison\n\n{note}\n\n{markdown_table(table)}\n")
    if robustness is not None:
        files += write_robustness(robustness, out, *pair)
    return {"table": table, "robustness": robustness, "files": [str(f) for f in files], "registered": registered}


def best_model_run(runs: Sequence[Any], table: pd.DataFrame) -> str:
    """The first run of the sorted table that has a logged model (evaluate and explain runs have none)."""
    with_model = {r.info.run_id for r in runs if MODEL_ID_TAG in r.data.tags}
    best = next((run_id for run_id in table["run_id"] if run_id in with_model), None)
    if best is None:
        raise ValueError("--register: none of the compared runs has a logged model; compare training runs "
                         "trained by this version of cxrlab (--kind train)")
    return best


def register_run(uri: str, ref: str, name: str, alias: str | None = None) -> str:
    """Register the logged model of a run (id or prefix) or a model id (m-...) as a new version of
    `name`, move `alias` to it, and say so in one line."""
    from mlflow import MlflowClient

    model_id, run_id = model_of(MlflowClient(uri), ref)
    version = register_model(uri, model_id, name, alias)
    moved = f" (alias @{alias})" if alias else ""
    return f"registered models:/{name}/{version}{moved} from run {run_id or 'unknown'} (model {model_id})"


# Short forms of metric names for the terminal table; the legend line under it spells them out.
ABBREVIATIONS = (("test/", "t/"), ("val/", "v/"), ("best/", "b/"), ("explain/", "x/"), ("_focus", ""), ("aopc_", ""))
KEY_COLUMNS = ("run_id", "run_name", "alarm")  # repeated in every block of a table too wide for one
NAME_WIDTH = 18


def abbreviate(metric: str) -> str:
    """`test/explain/border_focus` -> `t/x/border`, `explain/aopc_gap` -> `x/gap`."""
    for long, short in ABBREVIATIONS:
        metric = metric.replace(long, short)
    return metric


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _block(columns: list[tuple[str, list[str], bool]]) -> list[str]:
    """(header, cells, right-aligned) columns as text lines, two spaces apart."""
    widths = [max(len(h), *(len(c) for c in cells)) for h, cells, _ in columns]

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if right else c.ljust(w) for c, w, (_, _, right) in zip(row, widths, columns, strict=True)).rstrip()

    rows = [list(r) for r in zip(*(cells for _, cells, _ in columns), strict=True)]
    return [line([h for h, _, _ in columns]), line(["-" * w for w in widths]), *map(line, rows)]


def fitted_table(table: pd.DataFrame, width: int, wide: bool = False) -> list[str]:
    """The terminal view: run ids of 8 characters (a prefix every command takes), names cut to
    NAME_WIDTH, numbers to 3 decimals, abbreviated metric headers, and the metric columns in
    blocks that each fit `width` characters (each block repeats id, name and alarm). `wide`:
    every column, whole names, in one table however wide."""
    first_metric = table.columns.get_loc("alarm") + 1
    metrics = list(table.columns[first_metric:])
    shown = table.assign(run_id=table["run_id"].str[:8])
    if not wide:
        shown = shown.assign(run_name=[n if len(n) <= NAME_WIDTH else n[: NAME_WIDTH - 1] + "…" for n in shown["run_name"]])
    keys = [(c, [_cell(v) for v in shown[c]], False) for c in (table.columns[:first_metric] if wide else KEY_COLUMNS)]
    values = [(abbreviate(c), [_cell(v) for v in shown[c]], True) for c in metrics]
    if wide:
        return _block(keys + values)
    room = width - sum(max(len(h), *map(len, cells)) + 2 for h, cells, _ in keys)
    blocks: list[list[tuple[str, list[str], bool]]] = [[]]
    left = room
    for column in values:
        need = max(len(column[0]), *map(len, column[1])) + 2
        if blocks[-1] and need > left:
            blocks.append([])
            left = room
        blocks[-1].append(column)
        left -= need
    lines: list[str] = []
    for i, block in enumerate(blocks):
        lines += ([""] if i else []) + _block(keys + block)
    return lines


def format_comparison(result: dict[str, Any], width: int | None = None, wide: bool = False) -> str:
    """The terminal view of compare_runs: the table fitted to the terminal (COLUMNS, default 100),
    a legend of its short names, a note on empty cells, robustness, and the written files."""
    table = result["table"]
    width = width or shutil.get_terminal_size((100, 24)).columns
    lines = fitted_table(table, width, wide)
    metrics = [c for c in table.columns if c not in table.columns[: table.columns.get_loc("alarm") + 1]]
    if any(abbreviate(m) != m for m in metrics):
        lines += ["", "t/ test/, v/ val/, b/ best/, x/ explain/; focus and aopc_ names shortened (the CSV has them whole)"]
    if table[metrics].isna().any().any():
        lines += ["— the run did not log this metric (training runs have no test/explain/*, evaluations no val/*)"]
    if result["robustness"] is not None:
        lines += ["", "heatmap robustness (last heatmap set of each run)"]
        lines += [text_table(result["robustness"]), robustness_summary(result["robustness"])]
    lines += ["", "written: " + ", ".join(result["files"])]
    if result.get("registered"):
        lines.append(result["registered"])
    return "\n".join(lines)
