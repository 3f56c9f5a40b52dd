"""`cxrlab explain` command line (the work happens in cxrlab.experiments.evaluation.explain_checkpoint, imported on use)."""

from __future__ import annotations

import argparse

from cxrlab.experiments.cli.flags import (
    CHECKPOINT_HELP,
    add_common_flags,
    add_config_flags,
    overrides_from,
)


def cmd_explain(ns: argparse.Namespace) -> int:
    """cxrlab explain."""
    if ns.checkpoint == "compare":
        return cmd_explain_compare(ns)
    from cxrlab.experiments.evaluation.explain_checkpoint import explain_checkpoint
    from cxrlab.experiments.tracking.liveness import process_started

    if ns.refs:
        raise ValueError(f"unexpected arguments {ns.refs}; cxrlab explain takes one CHECKPOINT")
    result = explain_checkpoint(
        ns.checkpoint, overrides_from(ns), ns.split, ns.out, ns.max_per_class or None, ns.tracking_uri, process_started()
    )
    print(f"explained {result['n_images']} images of the {ns.split} split -> {result['out']}")
    if result["verdict"]:
        print(result["verdict"])
    for key, value in result["metrics"].items():
        print(f"  {key:<32} {value:.4f}")
    print(f"  MLflow run: {result['run_id']}")
    print(f"  run:        {result['link']}")
    return 0


def cmd_explain_compare(ns: argparse.Namespace) -> int:
    """cxrlab explain compare A B: heatmap robustness (`cxrlab compare --heatmaps` is its alias)."""
    from cxrlab.experiments.evaluation.robustness import (
        heatmap_robustness,
        robustness_summary,
        write_robustness,
    )

    if len(ns.refs) != 2:
        raise ValueError("usage: cxrlab explain compare A B  (run ids, heatmaps.npz files or explain folders)")
    table = heatmap_robustness(*ns.refs, uri=ns.tracking_uri)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="—"))
    if table["pc1_corr"].isna().any():
        print("— PC1 correlations are for the same class only (a class's first eigen-heatmap is of its own images)")
    print(f"\n{robustness_summary(table)}")
    if ns.out:
        print("written: " + ", ".join(map(str, write_robustness(table, ns.out, *ns.refs))))
    else:
        print("(nothing written; add --out DIR for heatmap_robustness.csv and .md)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `cxrlab explain`."""
    p = sub.add_parser(
        "explain", help="heatmaps, eigen-heatmaps, AOPC and focus of a checkpoint on any split",
        usage="cxrlab explain CHECKPOINT [--split test] [--out DIR] [--max_per_class N] [--data.KEY V ...]\n"
        "       cxrlab explain compare A B [--out DIR]",
        description="Explain a checkpoint: the same figures, tables and metrics as the training-time "
        "ExplainCallback, on any split (or another dataset via --data.root). `explain compare A B` "
        "correlates two heatmap sets (MLflow run ids, heatmaps.npz files or explain output folders): "
        "original vs new images, or model 1 vs model 2 (`cxrlab compare RUN_A RUN_B --heatmaps` is an alias that "
        "adds the runs' table). --data.* and --explain.* override the checkpoint's config.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help=CHECKPOINT_HELP + "; or the word `compare`")
    p.add_argument("refs", nargs="*", help="with `compare`: the two heatmap sets A B")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"], help="which split to explain [default: test]")
    p.add_argument("--out", help="output folder [default: mlruns/explanations/<time>-<checkpoint>]")
    p.add_argument("--max_per_class", type=int, default=50, help="images per class (0 = all) [default: 50]")
    add_common_flags(p, "tracking_uri")
    add_config_flags(p, sections=("data", "explain"))
    p.set_defaults(func=cmd_explain)
