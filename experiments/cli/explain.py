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
    if ns.checkpoint == "sanity":
        return cmd_explain_sanity(ns)
    from cxrlab.experiments.evaluation.explain_checkpoint import explain_checkpoint
    from cxrlab.experiments.tracking.liveness import process_started

    if ns.refs:
        raise ValueError(f"unexpected arguments {ns.refs}; cxrlab explain takes one CHECKPOINT")
    split = ns.split or "test"
    result = explain_checkpoint(
        ns.checkpoint, overrides_from(ns), split, ns.out, ns.max_per_class or None, ns.tracking_uri, process_started()
    )
    print(f"explained {result['n_images']} images of the {split} split -> {result['out']}")
    if result["verdict"]:
        print(result["verdict"])
    for key, value in result["metrics"].items():
        print(f"  {key:<32} {value:.4f}")
    print(f"  MLflow run: {result['run_id']}")
    print(f"  run:        {result['link']}")
    return 0


def cmd_explain_sanity(ns: argparse.Namespace) -> int:
    """cxrlab explain sanity CKPT: model randomisation, ROAD, deletion/insertion and the pointing game per method."""
    from cxrlab.experiments.evaluation.explain_checkpoint import sanity_checkpoint
    from cxrlab.experiments.evaluation.sanity_report import sanity_table
    from cxrlab.experiments.tracking.liveness import process_started

    if len(ns.refs) != 1:
        raise ValueError("usage: cxrlab explain sanity CHECKPOINT [--split val] [--methods gradcam,occlusion] [--n N]")
    overrides = overrides_from(ns)
    if ns.methods:
        overrides["explain.sanity.methods"] = ns.methods
    split = ns.split or "val"
    result = sanity_checkpoint(ns.refs[0], overrides, split, ns.out, ns.n, ns.tracking_uri, process_started(),
                               progress=not ns.quiet)
    print(f"sanity-checked {result['n_images']} images of the {split} split -> {result['out']}")
    print(sanity_table(result["checks"]).to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="—"))
    for line in result["verdicts"]:
        print(line)
    if result["note"]:
        print(result["note"])
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
        "       cxrlab explain sanity CHECKPOINT [--split val] [--methods gradcam,occlusion] [--n N] [--out DIR]\n"
        "       cxrlab explain compare A B [--out DIR]",
        description="Explain a checkpoint: the same figures, tables and metrics as the training-time "
        "ExplainCallback, on any split (or another dataset via --data.root). `explain compare A B` "
        "correlates two heatmap sets (MLflow run ids, heatmaps.npz files or explain output folders): "
        "original vs new images, or model 1 vs model 2 (`cxrlab compare RUN_A RUN_B --heatmaps` is an alias that "
        "adds the runs' table). `explain sanity CHECKPOINT` checks the heatmap methods: model randomisation "
        "(cascading and independent), ROAD, deletion/insertion AUC and the pointing game, beside the model-free "
        "edge control that must fail. --data.* and --explain.* override the checkpoint's config.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help=CHECKPOINT_HELP + "; or the word `sanity` or `compare`")
    p.add_argument("refs", nargs="*", help="with `sanity`: the CHECKPOINT; with `compare`: the two heatmap sets A B")
    p.add_argument("--split", choices=["train", "val", "test", "all"],
                   help="which split to explain [default: test; val for `sanity`]")
    p.add_argument("--methods", type=lambda v: [m.strip() for m in v.split(",") if m.strip()],
                   help="with `sanity`: comma-separated methods to check [default: explain.sanity.methods; "
                   "edge is always added as the control]")
    p.add_argument("--n", type=int, help="with `sanity`: images per class [default: explain.sanity.per_class, 4]")
    p.add_argument("--out", help="output folder [default: mlruns/explanations/<time>-<checkpoint>, mlruns/sanity/... for `sanity`]")
    p.add_argument("--max_per_class", type=int, default=50, help="images per class (0 = all) [default: 50]")
    add_common_flags(p, "tracking_uri", "quiet")
    add_config_flags(p, sections=("data", "explain"))
    p.set_defaults(func=cmd_explain)
