"""cxrlab evaluate: a checkpoint in; a clinical-style report folder and one MLflow run out."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxrlab.callbacks import console
from cxrlab.callbacks.explanations.shortcut import TAG as SHORTCUT_TAG
from cxrlab.callbacks.trust.model_trust import trust_of
from cxrlab.config import Config, from_dict, set_dotted, to_dict
from cxrlab.experiments.evaluation.clinical import per_class_table
from cxrlab.experiments.evaluation.data import UNSEEN, EvaluationData, evaluation_data
from cxrlab.experiments.evaluation.inference import pick_device, predict_and_judge
from cxrlab.experiments.evaluation.multilabel_report import (
    multilabel_data,
    multilabel_outputs,
    multilabel_summary,
    split_rows,
)
from cxrlab.experiments.evaluation.outputs import (
    VAL,
    Predictions,
    positive_class,
    write_json,
    write_outputs,
)
from cxrlab.experiments.evaluation.report import Section, render_html, render_markdown, text_table
from cxrlab.experiments.evaluation.trust_report import (
    ood_summary,
    trust_section,
    trust_sentence,
    trust_summary,
)
from cxrlab.experiments.tracking import checkpoints, store
from cxrlab.experiments.tracking.ui import ui_link
from cxrlab.experiments.tracking.writer import log_derived_run, run_tags
from cxrlab.lightning_modules.checkpoint import load_classifier

SPLITS = ("test", "val", "all")
EVAL_EXPERIMENT = "cxrlab-evaluate"
EVAL_ROOT = Path("mlruns/evaluations")
# Only what describes the data and the explanations may change; the model is the checkpoint's.
OVERRIDABLE = ("data.", "explain.")


def evaluation_config(config: Config, overrides: dict[str, Any], where: str) -> Config:
    """The checkpoint's training config with `--data.*` / `--explain.*` overrides, validated."""
    raw = to_dict(config)
    for key, value in overrides.items():
        if not key.startswith(OVERRIDABLE):
            raise ValueError(
                f"--{key}: evaluate rebuilds the model from the checkpoint; only --data.* and "
                "--explain.* options can change"
            )
        set_dotted(raw, key, value)
    return from_dict(raw, f"{where} (config stored in the checkpoint, with overrides)")


def parse_cutoffs(text: str | Sequence[float]) -> list[float]:
    """'0.5,0.9' -> [0.5, 0.9], each a probability."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = [float(v) for v in parts if str(v).strip()]
    except ValueError:
        raise ValueError(
            f"--cutoffs {text!r}: give probabilities separated by commas, e.g. 0.5,0.9"
        ) from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"--cutoffs {text!r}: give probabilities in [0, 1], e.g. 0.5,0.9")
    return values


def default_out(checkpoint: str | Path) -> Path:
    """A fresh folder mlruns/evaluations/<timestamp>-<checkpoint stem>."""
    base = EVAL_ROOT / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(checkpoint).stem}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def rows_to_predict(table: pd.DataFrame, split: str, with_val: bool) -> pd.DataFrame:
    """Known rows of `split` (plus validation when thresholds are chosen) and every unseen row."""
    known = table["known"].to_numpy(bool)
    names = [split, VAL] if with_val else [split]
    in_split = table["split"].isin(names).to_numpy() | (split == "all")
    keep = table["split"].eq(UNSEEN).to_numpy() | (known & in_split)
    return table[keep]


def evaluate(
    checkpoint: str | Path,
    overrides: dict[str, Any] | None = None,
    split: str = "test",
    out: str | Path | None = None,
    positive: str | None = None,
    cutoffs: Sequence[float] | str = (0.5, 0.9),
    tracking_uri: str | None = None,
    explain: bool = False,
    device: str = "auto",
    n_boot: int = 1000,
    progress: bool = True,
    started: float | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one split; write every output to `out`, log one MLflow run (dated
    from `started`, epoch seconds, else from this call)."""
    started = started or time.time()
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    cutoffs = parse_cutoffs(cutoffs)
    checkpoint = checkpoints.local_checkpoint(checkpoint, tracking_uri)  # runs:/RUN_ID: from the store
    model = load_classifier(checkpoint)
    uri = store.resolve_uri(tracking_uri)
    classes = model.classes
    cfg = evaluation_config(model.config, overrides or {}, str(checkpoint))
    out = Path(out) if out is not None else default_out(checkpoint)
    verdicts, preds = None, None
    trust = trust_of(model)
    if model.multilabel:
        if positive is not None:
            raise ValueError("--positive picks one class of a multi-class model; a multi-label model scores every finding")
        data, dm = multilabel_data(model, cfg)
        rows = split_rows(data, split)
        probs, verdicts = predict_and_judge(model, rows, cfg.data, trust, pick_device(device), progress)
        results, sections = multilabel_outputs(model, cfg, dm, data, split, probs, out, pick_device(device), n_boot, progress)
    else:
        positive = positive_class(classes, positive)
        data = evaluation_data(cfg.data, classes, cfg.seed, model.input_size)
        rows = rows_to_predict(data.table, split, with_val=positive is not None)
        probs, verdicts = predict_and_judge(model, rows, cfg.data, trust, pick_device(device), progress)
        preds = Predictions(rows, probs, classes)
        results, sections = write_outputs(preds, split, positive, cutoffs, out, n_boot)
    first, extra = explain_sections(model, preds, data, split, positive, cfg, out, explain, results)
    banners = []
    if verdicts is not None:
        if preds is None:  # multi-label
            results["trust"] = ood_summary(verdicts, cfg.trust.ood_pass)
        else:
            results["trust"] = trust_summary(preds, verdicts, trust, split, cfg.trust.ood_pass)
        first.insert(0, trust_section(rows if preds is None else preds.rows, verdicts, results["trust"], out))
        if results["trust"]["foreign"]:
            banners.append((trust_sentence(results["trust"]), True))
        results["metrics"] |= {
            f"{split}/trust/{k}": v for k, v in results["trust"].items()
            if k in ("ood_share", "atypical_share", "shortcut_flag_share", "ece_before", "ece_after") and v is not None
        }
    train_run_id = model.run_info.get("run_id")
    results = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "train_run_id": train_run_id,
        "data_root": data.where,
        "out": str(out),
        "skipped_images": len(data.skipped),
    } | results
    if len(data.skipped):
        data.skipped.to_csv(out / "skipped_images.csv", index=False)
    title = f"cxrlab evaluation: {Path(checkpoint).name} on {Path(data.where).name} ({split})"
    report = [*first, overview(results, cfg, rows, data.skipped), *sections, *extra]
    shortcut = results.get("shortcut")
    banners += [(shortcut["verdict"], shortcut["alarm"])] if shortcut else []
    (out / "report.html").write_text(render_html(title, report, banners))
    (out / "report.md").write_text(render_markdown(title, report, banners))
    write_json(out / "metrics.json", results)
    results["run_id"], results["experiment_id"] = log_evaluation(out, results, cfg, uri, started)
    results["tracking_uri"] = uri
    return results


def explain_sections(
    model: Any, preds: Predictions | None, data: EvaluationData, split: str, positive: str | None,
    cfg: Config, out: Path, explain: bool, results: dict[str, Any],
) -> tuple[list[Section], list[Section]]:
    """The shortcut check that opens the report (unless explain.alarm.enabled is false) and, with
    --explain, the explanation and sanity-check sections; adds their metrics and the verdict to `results`."""
    if not (explain or cfg.explain.alarm.enabled):
        return [], []
    from cxrlab.experiments.evaluation.explain_report import (
        explain_report,
        explain_split,
        shortcut_report,
    )

    done = explain_split(model, data, split, cfg, focus_only=not explain)
    results["metrics"] |= {f"{split}/{k}": v for k, v in done.metrics.items() if math.isfinite(v)}
    first, verdict = [], done.explanation.verdict
    if verdict is not None:
        first = [shortcut_report(done.explanation, split, cfg, out)]
        results["shortcut"] = {
            "alarm": verdict.alarm, "share": verdict.share, "n_flagged": verdict.n_flagged,
            "n_judged": verdict.n_judged, "verdict": verdict.sentence(),
        }
    extra = []
    if explain:
        from cxrlab.experiments.evaluation.sanity_report import (
            run_sanity,
            sanity_metrics,
            sanity_section,
        )

        checks, images = run_sanity(model, data, split, cfg, None, progress=console.level() > console.QUIET)
        results["metrics"] |= {f"{split}/{k}": v for k, v in sanity_metrics(checks).items() if math.isfinite(v)}
        results["sanity"] = {name: c.numbers() for name, c in checks.items()}
        extra = [*explain_report(model, preds, done, split, positive, cfg, out), sanity_section(checks, images, split, cfg, out)]
    return first, extra


def overview(
    results: dict[str, Any], cfg: Config, rows: pd.DataFrame, skipped: pd.DataFrame
) -> Section:
    """What was evaluated: checkpoint, model, data and how many images of each label per split."""
    m, d = cfg.model, cfg.data
    text = [
        f"Checkpoint: {results['checkpoint']} "
        f"(training run {results['train_run_id'] or 'unknown'}).",
        f"Model: {m.backbone}, head {m.head}, fine-tune {m.finetune}, input "
        f"{d.image_size} px; {'findings' if results.get('task') == 'multilabel' else 'classes'} "
        f"{', '.join(results['classes'])}.",
        f"Data: {results['data_root']} (source {d.source}"
        + (f", label map {d.label_map}" if d.label_map else "")
        + f"); evaluated split: {results['split']} ({results['n']} images of known classes).",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')}. Metrics use the evaluated split only; "
        "thresholds are chosen on the validation split.",
    ]
    if len(skipped):
        text.append(f"{len(skipped)} unreadable image(s) skipped (skipped_images.csv).")
    counts = pd.crosstab(rows["label"], rows["split"])
    counts.index.name = "label"
    counts.columns.name = None
    return Section("Overview", text, tables=[counts])


def log_evaluation(
    out: Path, results: dict[str, Any], cfg: Config, uri: str, started: float | None = None
) -> tuple[str, str]:
    """One MLflow run with every output file, in the training run's experiment when known."""
    m = cfg.model
    shortcut = results.get("shortcut")
    tags = run_tags("evaluate", m.backbone, m.head, m.finetune, results["data_root"])
    if shortcut and shortcut["n_judged"]:
        tags[SHORTCUT_TAG] = "yes" if shortcut["alarm"] else "no"
    params = {
        "checkpoint": results["checkpoint"],
        "split": results["split"],
        "classes": ",".join(results["classes"]),
        "positive": (results.get("binary") or {}).get("positive", "none"),
        "data.root": results["data_root"],
        "data.source": cfg.data.source,
        "data.label_map": str(cfg.data.label_map),
        "model.backbone": m.backbone,
        "model.head": m.head,
        "model.finetune": m.finetune,
    }
    # Named after the training run when the store knows it: best-epoch007 says little in compare.
    name = _run_name(uri, results["train_run_id"]) or Path(results["checkpoint"]).stem
    return log_derived_run(
        uri, results["train_run_id"], EVAL_EXPERIMENT,
        f"evaluate-{name}-{results['split']}",
        tags, params, results["metrics"], out, started=started,
    )


def _run_name(uri: str, run_id: str | None) -> str | None:
    """The name of a run in this store, else None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return MlflowClient(uri).get_run(run_id).info.run_name
    except MlflowException:
        return None


def _fmt(value: float | None, spec: str = ".3f") -> str:
    """A number for the terminal, 'n/a' where it is undefined (stored as null)."""
    return "n/a" if value is None else format(value, spec)


def summary_text(results: dict[str, Any]) -> str:
    """The short terminal summary of an evaluation."""
    if results.get("task") == "multilabel":
        return "\n".join([*multilabel_summary(results), *_links(results)])
    s, split, binary = results["summary"], results["split"], results["binary"]
    columns = ["sensitivity", "specificity", "f1", "auc", "support"]
    table = per_class_table(s).rename(columns={"recall": "sensitivity"})[columns]
    lo, hi = results["auc_ci"]["macro"]
    lines = [
        f"== cxrlab evaluate: {split} split, {results['n']} images ==",
        *([trust_sentence(results["trust"])] if "trust" in results else ["trust: unavailable (checkpoint written before trust models)"]),
        *([results["shortcut"]["verdict"]] if "shortcut" in results else []),
        text_table(table),
        f"accuracy {_fmt(s['accuracy'])}   macro F1 {_fmt(s['macro_avg']['f1'])}   "
        f"macro AUC {_fmt(s['macro_avg']['auc'])} [95 % CI {_fmt(lo)}-{_fmt(hi)}]   "
        f"ECE {_fmt(results['calibration']['ece'])}",
    ]
    if binary:
        lines += [
            f"{binary['positive']}: {row['rule']} threshold {_fmt(row['threshold'], '.4g')} "
            f"(chosen on val) -> sensitivity {_fmt(row['sensitivity'])}, "
            f"specificity {_fmt(row['specificity'])}"
            for row in binary["chosen"]
            if row["split"] == split
        ]
        if not binary["thresholds"]:
            lines.append(f"{binary['positive']}: {binary['note']}")
    for row in results["unseen"]:
        spread = ", ".join(f"{c} {row[c]}" for c in results["classes"] if row[c])
        lines.append(f"unseen label {row['true label']} ({row['n']} images) -> {spread}")
    return "\n".join([*lines, *_links(results)])


def _links(results: dict[str, Any]) -> list[str]:
    """Where the report and the run are."""
    return [
        f"report:     {Path(results['out']) / 'report.html'}",
        f"MLflow run: {results['run_id']}",
        f"run:        {ui_link(results['tracking_uri'], results['experiment_id'], results['run_id'])}",
    ]
