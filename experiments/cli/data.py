"""`cxrlab data`: the phantom generator, `data inspect` and `data sources` (the work happens in datamodules)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxrlab.experiments.cli.flags import (
    add_common_flags,
    add_config_flags,
    config_path,
    overrides_from,
)


def cmd_phantom(ns: argparse.Namespace) -> int:
    """cxrlab data phantom."""
    from cxrlab.datamodules.phantom import generate_phantom

    classes = [c.strip() for c in ns.classes.split(",") if c.strip()]
    table = generate_phantom(
        ns.out, n_per_class=ns.n_per_class, size=ns.size, seed=ns.seed, classes=classes,
        shortcut=ns.shortcut, workers=ns.workers, progress=not ns.quiet, multilabel=ns.multilabel,
        **({"difficulty": ns.difficulty} if "difficulty" in ns else {}),
    )
    kind = f"findings {', '.join(c for c in classes if c != 'normal')}" if ns.multilabel else f"{len(classes)} classes"
    print(f"wrote {len(table)} images of {kind} ({table['patient_id'].nunique()} patients) to {ns.out}")
    print(f"train on it: cxrlab train --config phantom_demo --data.root {ns.out}")
    return 0


def cmd_inspect(ns: argparse.Namespace) -> int:
    """cxrlab data inspect."""
    from cxrlab.config import load_config
    from cxrlab.datamodules.inspection import inspect_dataset, report_text, write_inspection

    cfg = load_config(config_path(ns.config), overrides_from(ns))
    ins = inspect_dataset(cfg.data, workers=ns.workers, progress=not ns.quiet)
    print(report_text(ins))
    if ns.out:
        written = write_inspection(ins, Path(ns.out))
        print(f"\nwrote {len(written)} files to {ns.out} (report.txt, images.csv, class_balance.png, ...)")
    else:
        print("\n(nothing written; add --out DIR for the tables as CSV, report.txt and class_balance.png)")
    return 0


def cmd_sources(ns: argparse.Namespace) -> int:
    """cxrlab data sources."""
    from cxrlab.datamodules.sources.registry import get_source, source_names

    print(f"{'source':<18} {'auto':<5} {'official split':<15} point data.root at")
    for name in source_names():
        s = get_source(name)
        print(f"{name:<18} {'yes' if s.detect else 'no':<5} {'yes' if s.official_split else 'no':<15} {s.folder}")
        print(f"{'':<18} {s.summary}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `cxrlab data` and its sub-commands phantom, inspect and sources."""
    data = sub.add_parser("data", help="dataset tools (phantom generator, inspect, sources)")
    data.set_defaults(func=lambda _: data.print_help() or 2)
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    ph = dsub.add_parser(
        "phantom", help="generate the procedural phantom CXR dataset",
        description="Write procedural frontal chest radiographs (8-bit PNG) with lung and lesion masks "
        "and metadata.csv (path,label,patient_id,mask_path,lesion_path,shortcut).",
    )
    ph.add_argument("out", help="output folder (created; a previous phantom there is replaced)")
    ph.add_argument("--n_per_class", type=int, default=100, help="images per class [default: 100]")
    ph.add_argument("--size", type=int, default=256, help="image side in pixels [default: 256]")
    ph.add_argument("--seed", type=int, default=0, help="random seed; same seed = same dataset [default: 0]")
    ph.add_argument("--classes", default="normal,bacteria,virus,covid", help="comma-separated subset of normal,bacteria,virus,covid [default: all four]")
    ph.add_argument("--shortcut", type=float, default=0.0, help="share of images with a class-correlated corner marker (the artefact trap) [default: 0]")
    ph.add_argument("--difficulty", type=float, default=argparse.SUPPRESS, help="0 (obvious findings) .. 1 (faint, variable) [default: cxrlab.datamodules.phantom.DEFAULT_DIFFICULTY, where a clean demo model is good but not perfect]")
    ph.add_argument("--workers", type=int, default=1, help="worker processes [default: 1]")
    ph.add_argument("--multilabel", action="store_true", help="several findings per film: each patient has each finding of --classes (normal = none) with chance 0.4, in columns finding:<name>; the same number of images in all [default: one class per film]")
    add_common_flags(ph, "quiet")
    ph.set_defaults(func=cmd_phantom)

    p = dsub.add_parser(
        "inspect", help="counts, image properties, duplicates, leaks and confounders of a dataset",
        usage="cxrlab data inspect --data.root DIR [--data.source NAME] [--out DIR] [--config FILE] [--data.KEY VALUE ...]",
        description=(
            "Read a dataset the way training would (same source adapter, label map and skips) and\n"
            "report: images per class, official split, source and patient; width, height, file size,\n"
            "bit depth and mode per class; unreadable files; byte-identical duplicates; patients in\n"
            "more than one official split; and a WARNING, with the ranges per class, for every file\n"
            "property that separates two classes (pairwise AUC or share told apart >= 0.9): a\n"
            "shortcut a model can learn instead of anatomy.\n"
            "A multi-label source (nih, chexpert, mimic_cxr_jpg, padchest, rsna_pneumonia) is counted per\n"
            "finding instead: present, absent, uncertain and not stated (findings.csv), present per\n"
            "official split, co-occurrence, views, and a WARNING for each finding a file property\n"
            "tells from its absence.\n\n"
            "  cxrlab data inspect --data.source kermany --data.root chest_xray --out inspect/\n\n"
            "With --out: report.txt, images.csv (one row per image), properties.csv,\n"
            "class_by_split.csv, class_by_source.csv, patients.csv, duplicates.csv, unreadable.csv,\n"
            "skipped_images.csv, leaks.csv and class_balance.png. `cxrlab data sources` lists the sources."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", help="take the data section from this YAML config (or a shipped one's name)")
    p.add_argument("--out", metavar="DIR", help="write the tables, report.txt and class_balance.png here")
    p.add_argument("--workers", type=int, default=4, help="threads that read, hash and decode images [default: 4]")
    add_common_flags(p, "quiet", "verbose")
    add_config_flags(p, sections=("data",))
    p.set_defaults(func=cmd_inspect)

    s = dsub.add_parser(
        "sources", help="list the dataset sources (data.source) and where data.root points for each",
        description="Every data.source name, whether `auto` detects it, whether it has an official split, "
        "and the folder of the download to point data.root at.",
    )
    s.set_defaults(func=cmd_sources)
