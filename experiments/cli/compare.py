"""The `cxrlab compare` command line; the runner and its heavy imports: cxrlab.experiments.evaluation.compare."""

from __future__ import annotations

import argparse
from typing import Any

from cxrlab.experiments.cli.flags import add_common_flags


def cmd_compare(ns: argparse.Namespace) -> int:
    """cxrlab compare."""
    from cxrlab.experiments.evaluation.compare import compare_runs, format_comparison

    result = compare_runs(
        ns.experiment,
        ns.run_ids,
        ns.metrics,
        ns.sort,
        ns.ascending,
        ns.out,
        ns.tracking_uri,
        ns.heatmaps,
        ns.kind,
        ns.alarm,
        ns.register,
        ns.alias,
    )
    print(format_comparison(result, wide=ns.wide))
    return 0


def add_parser(subparsers: Any) -> None:
    """Register `cxrlab compare`."""
    p = subparsers.add_parser(
        "compare",
        help="compare runs side by side (params and metrics from MLflow)",
        description="A table of runs (backbone, head, fine-tune and chosen metrics) from MLflow, "
        "printed and written as CSV and Markdown. Metric names accept short forms: test/f1 -> "
        "test/macro_f1, test/auc -> test/auroc, test/recall -> every test/recall/<class>; a metric "
        "with a best-epoch value (best/<metric>) shows that. --heatmaps adds the heatmap robustness "
        "of two runs: an alias of `cxrlab explain compare RUN_A RUN_B`.",
    )
    p.add_argument(
        "run_ids", metavar="RUN_ID", nargs="*", help="runs to compare (and/or --experiment)"
    )
    p.add_argument("--experiment", default=None, help="compare every run of this MLflow experiment")
    p.add_argument(
        "--metrics",
        default=None,
        help="comma-separated metrics [default: test accuracy, macro F1 and disease recall, "
        "validation accuracy and macro F1, AOPC, lung and border focus, where logged]",
    )
    p.add_argument(
        "--sort", default=None, metavar="METRIC", help="sort by this metric, largest first"
    )
    p.add_argument("--ascending", action="store_true", help="sort smallest first (losses)")
    p.add_argument(
        "--kind",
        default="all",
        help="all, or the runs of one kind: train | evaluate | explain [default: all]",
    )
    p.add_argument(
        "--alarm",
        default="all",
        choices=["all", "yes", "no"],
        help="all, or only the runs whose shortcut alarm fired (yes) or stayed quiet (no) "
        "[default: all]",
    )
    p.add_argument("--out", default=None, help="output folder [default: mlruns/comparisons/<time>]")
    p.add_argument("--wide", action="store_true", help="every column (kind, backbone, head, fine-tune) and whole run names "
                   "in one table, however wide [default: fit the terminal, COLUMNS or 100]")
    add_common_flags(p, "tracking_uri")
    p.add_argument(
        "--heatmaps",
        action="store_true",
        help="also the heatmap robustness of exactly two runs (alias of `cxrlab explain compare`)",
    )
    p.add_argument("--register", metavar="NAME", default=None,
                   help="register the logged model of the best run by --sort (the first with a model) as a "
                   "new version of registered model NAME")
    p.add_argument("--alias", metavar="ALIAS", default=None,
                   help="with --register: move this alias (e.g. champion) to the new version, so "
                   "models:/NAME@ALIAS loads it")
    p.set_defaults(func=cmd_compare)
