"""The `cxrlab evaluate` command line; the runner and its heavy imports: cxrlab.experiments.evaluation.evaluate."""

from __future__ import annotations

import argparse
from typing import Any

from cxrlab.callbacks import console
from cxrlab.experiments.cli.flags import (
    CHECKPOINT_HELP,
    add_common_flags,
    add_config_flags,
    overrides_from,
)

DESCRIPTION = """\
Rebuild the model and its preprocessing from CHECKPOINT alone and evaluate it on the split it was
trained with, or on another dataset (--data.root, --data.source, --data.label_map). Writes into
--out: predictions.csv, confusion matrices, classification report, ROC/PR curves with bootstrap
CIs, sensitivity/specificity, the binary threshold analysis of --positive (thresholds chosen on
the validation split), calibration, the unseen-label table, metrics.json, a self-contained
report.html and report.md; all of it is logged as one MLflow run beside the training run.

  cxrlab evaluate mlruns/checkpoints/1/<run>/checkpoints/best-epoch004.ckpt
  cxrlab evaluate model.ckpt --data.root /data/other --split all --positive covid

The config flags below (--data.* and --explain.*) override the checkpoint's config.
"""


def cmd_evaluate(ns: argparse.Namespace) -> int:
    """cxrlab evaluate."""
    from cxrlab.experiments.evaluation.evaluate import evaluate, summary_text
    from cxrlab.experiments.tracking.liveness import process_started

    results = evaluate(
        ns.checkpoint,
        overrides_from(ns),
        ns.split,
        ns.out,
        ns.positive,
        ns.cutoffs,
        ns.tracking_uri,
        ns.explain,
        ns.device,
        ns.n_boot,
        progress=not ns.quiet,
        started=process_started(),
    )
    verdict = results.get("shortcut", {}).get("verdict")
    for line in summary_text(results).splitlines():
        if line == verdict:  # the verdict stands out: its own line, red or green where colour shows
            console.verdict(line, results["shortcut"]["alarm"], at=console.QUIET)
        else:
            print(line)
    return 0


def add_parser(subparsers: Any) -> None:
    """Register `cxrlab evaluate`."""
    p = subparsers.add_parser(
        "evaluate",
        help="clinical-style report of a checkpoint (one MLflow run)",
        usage="cxrlab evaluate CHECKPOINT [--split test|val|all] [--out DIR] [--positive CLASS] "
        "[--cutoffs 0.5,0.9] [--explain] [--tracking_uri URI] [--data.KEY VALUE ...]",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    p.add_argument("--split", default="test", help="test | val | all [default: test]")
    p.add_argument(
        "--out",
        default=None,
        help="output folder [default: mlruns/evaluations/<time>-<checkpoint>]",
    )
    p.add_argument(
        "--positive",
        default=None,
        help="class of the binary analysis, or none [default: covid if a class, else the disease "
        "class of a 2-class model, else none]",
    )
    p.add_argument(
        "--cutoffs",
        default="0.5,0.9",
        help="confidence cut-offs of the binary analysis [default: 0.5,0.9]",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="add Grad-CAM overlays (TP/FP/FN), average and eigen-heatmaps and the AOPC table",
    )
    add_common_flags(p, "tracking_uri", "device", "verbose")
    p.add_argument(
        "--n_boot",
        type=int,
        default=1000,
        help="bootstrap resamples of the AUC intervals [default: 1000]",
    )
    add_common_flags(p, "quiet")
    add_config_flags(p, sections=("data", "explain"))
    p.set_defaults(func=cmd_evaluate)
