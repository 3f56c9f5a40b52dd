"""The `cxrlab` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from experiments.config import ConfigError, bounds, iter_fields, range_text, type_name

DESCRIPTION = """\
cxrlab: train, sweep, explain and evaluate chest X-ray classifiers, tracked in MLflow.

Start with:  cxrlab data phantom data/phantom  &&  cxrlab train --config experiments/configs/phantom_demo.yaml
Runs are stored in mlruns/ (sqlite:///mlruns/mlflow.db); browse them with `cxrlab ui`.
"""

CONFIG_DIR = Path(__file__).parent / "configs"

# Each module exposes add_parser(subparsers) and sets its own `func`; imports stay light.
COMMAND_MODULES: tuple[str, ...] = (
    "experiments.evaluate_cli",
    "experiments.predict_cli",
    "experiments.compare_cli",
    "experiments.explain_cli",
    "experiments.sweep",
)


# --------------------------------------------------------------------------- config flags


def add_config_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...] | None = None) -> None:
    """One `--section.key VALUE` flag per config option (of `sections`, default all), with its help."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    ranges = dict(bounds())
    for key, tp, default, help_text in iter_fields():
        section = key.split(".")[0] if "." in key else "general"
        if sections is not None and section not in sections:
            continue
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} options (config key {section}.*)")
        shown = "null" if default is None else default
        if key in ranges:
            shown = f"{shown}; {range_text(ranges[key])}"
        groups[section].add_argument(
            f"--{key}",
            dest=f"cfg:{key}",
            metavar=type_name(tp).upper(),
            default=argparse.SUPPRESS,
            help=f"{help_text} [default: {shown}]".replace("%", "%%"),
        )


def overrides_from(ns: argparse.Namespace) -> dict[str, Any]:
    """The dotted config overrides given on the command line."""
    return {k.removeprefix("cfg:"): v for k, v in vars(ns).items() if k.startswith("cfg:")}


def config_path(value: str | None) -> Path | None:
    """A config path, also accepting a shipped config's bare name (phantom_demo)."""
    if value is None:
        return None
    path = Path(value)
    if not path.exists() and not path.suffix and (CONFIG_DIR / f"{value}.yaml").is_file():
        return CONFIG_DIR / f"{value}.yaml"
    return path


# --------------------------------------------------------------------------- commands


def cmd_train(ns: argparse.Namespace) -> int:
    """cxrlab train."""
    from experiments.checks import check_config
    from experiments.config import from_dict, load_config, set_dotted, to_yaml
    from experiments.train import resolve, resume_config, train

    overrides = overrides_from(ns)
    if ns.tracking_uri:
        overrides["tracking.uri"] = ns.tracking_uri
    run_id = None
    if ns.resume:
        from experiments import tracking
        from lightning_modules.checkpoint import read_checkpoint

        # runs:/RUN_ID/checkpoints/last.ckpt: the resume checkpoint a run uploaded to its server.
        uri = overrides.get("tracking.uri")
        ns.resume = str(tracking.local_checkpoint(ns.resume, uri, overrides.get("tracking.checkpoint_dir")))
        ckpt = read_checkpoint(ns.resume)
        raw, run_id = resume_config(ckpt)
        if ns.config:
            raise ConfigError("--resume takes its config from the checkpoint; drop --config (overrides still apply)")
        for k, v in overrides.items():
            set_dotted(raw, k, v)
        where = f"{ns.resume} (config stored in the checkpoint)"
        cfg = from_dict(raw, where)
    else:
        path = config_path(ns.config)
        where = str(path) if path else "config"
        cfg = load_config(path, overrides)
    check_config(cfg, where)
    if ns.print_config:
        print(to_yaml(resolve(cfg)), end="")
        return 0
    result = train(cfg, resume=ns.resume, run_id=run_id)
    if result.interrupted:
        print("cxrlab: training interrupted; resume with --resume on the last.ckpt of this run", file=sys.stderr)
        return 130
    _print_result(result, cfg)
    return 0


def _print_result(result: Any, cfg: Any) -> None:
    if result.run_id is None and not cfg.trainer.fast_dev_run:
        return  # a non-zero DDP rank: rank 0 reports
    m = result.metrics
    print("\n== cxrlab train: done ==")
    for key in ("val/acc", "val/macro_f1", "val/auroc", "val/disease_recall", "test/acc", "test/macro_f1"):
        if key in m:
            print(f"  {key:<20} {m[key]:.4f}")
    if result.best_score is not None:
        print(f"  best {cfg.trainer.monitor} = {result.best_score:.4f}")
    if result.best_checkpoint:
        print(f"  checkpoint: {result.best_checkpoint}")
    if result.run_id:
        from experiments import tracking

        print(f"  MLflow run: {result.run_id}  (store {tracking.resolve_uri(cfg.tracking.uri)})")
        print("  browse:     cxrlab ui   ->  http://127.0.0.1:5000")


def cmd_phantom(ns: argparse.Namespace) -> int:
    """cxrlab data phantom."""
    from datamodules.phantom import generate_phantom

    classes = [c.strip() for c in ns.classes.split(",") if c.strip()]
    table = generate_phantom(
        ns.out, n_per_class=ns.n_per_class, size=ns.size, seed=ns.seed, classes=classes,
        shortcut=ns.shortcut, workers=ns.workers, progress=not ns.quiet,
        **({"difficulty": ns.difficulty} if "difficulty" in ns else {}),
    )
    print(f"wrote {len(table)} images of {len(classes)} classes ({table['patient_id'].nunique()} patients) to {ns.out}")
    print(f"train on it: cxrlab train --config phantom_demo --data.root {ns.out}")
    return 0


def cmd_models(ns: argparse.Namespace) -> int:
    """cxrlab models."""
    from lightning_modules.backbones import REGISTRY, build_backbone

    print(f"{'backbone':<20} {'input':>5}  {'normalisation':<13}" + ("  channels  blocks  Grad-CAM layer" if ns.detail else ""))
    for name in sorted(REGISTRY):
        e = REGISTRY[name]
        line = f"{name:<20} {e.input_size:>5}  {'[-1, 1]' if e.mean[0] == 0.5 else 'ImageNet':<13}"
        if ns.detail:
            bb = build_backbone(name, "none")
            line += f"  {bb.channels:>8}  {len(bb.blocks):>6}  backbone.{bb.target_layer}"
        print(line)
    print("timm:<name>          any CNN from timm (pip install 'cxrlab[timm]'), e.g. timm:legacy_xception")
    return 0


def cmd_ui(ns: argparse.Namespace) -> int:
    """cxrlab ui."""
    from experiments.ui import run_ui

    return run_ui(ns.host, ns.port, ns.backend_store_uri, ns.optuna)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The full `cxrlab` argument parser."""
    parser = argparse.ArgumentParser(
        prog="cxrlab", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("cxrlab")
    except PackageNotFoundError:
        ver = "dev"
    parser.add_argument("--version", action="version", version=f"cxrlab {ver}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train", help="train one model (one MLflow run)",
        usage="cxrlab train [--config FILE] [--resume CKPT] [--print_config] [--SECTION.KEY VALUE ...]",
        description="Train a classifier from a YAML config plus dotted overrides, e.g.\n"
        "  cxrlab train --config phantom_demo --model.backbone resnet18 --trainer.max_epochs 2\n"
        "Every config key is a flag below; values are parsed as YAML scalars/lists (0.8,0.1,0.1).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", help="YAML config file, or the name of a shipped one (see experiments/configs/)")
    p.add_argument("--resume", metavar="CKPT", help="continue a crashed/stopped run from its checkpoint (last.ckpt, or runs:/RUN_ID/checkpoints/last.ckpt on a tracking server), in the same MLflow run")
    p.add_argument("--print_config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--tracking_uri", help="MLflow tracking URI (same as --tracking.uri)")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    data = sub.add_parser("data", help="dataset tools (phantom generator, inspect, sources)")
    data.set_defaults(func=lambda _: data.print_help() or 2)
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    ph = dsub.add_parser(
        "phantom", help="generate the procedural phantom CXR dataset",
        description="Write procedural frontal chest radiographs (8-bit PNG) with lung and lesion masks "
        "and metadata.csv (path,label,patient_id,mask_path,lesion_path,shortcut).",
    )
    ph.add_argument("out", help="output folder (created; a previous phantom there is replaced)")
    ph.add_argument("--n-per-class", type=int, default=100, help="images per class [default: 100]")
    ph.add_argument("--size", type=int, default=256, help="image side in pixels [default: 256]")
    ph.add_argument("--seed", type=int, default=0, help="random seed; same seed = same dataset [default: 0]")
    ph.add_argument("--classes", default="normal,bacteria,virus,covid", help="comma-separated subset of normal,bacteria,virus,covid [default: all four]")
    ph.add_argument("--shortcut", type=float, default=0.0, help="share of images with a class-correlated corner marker (the artefact trap) [default: 0]")
    ph.add_argument("--difficulty", type=float, default=argparse.SUPPRESS, help="0 (obvious findings) .. 1 (faint, variable) [default: datamodules.phantom.DEFAULT_DIFFICULTY, where a clean demo model is good but not perfect]")
    ph.add_argument("--workers", type=int, default=1, help="worker processes [default: 1]")
    ph.add_argument("--quiet", action="store_true", help="no progress bar")
    ph.set_defaults(func=cmd_phantom)
    importlib.import_module("experiments.inspect_cli").add_parser(dsub)  # data inspect, data sources

    m = sub.add_parser("models", help="list the backbone registry")
    m.add_argument("--detail", action="store_true", help="build each backbone to show channels, blocks and Grad-CAM layer (slower)")
    m.set_defaults(func=cmd_models)

    ui = sub.add_parser("ui", help="start the MLflow UI on the local store (127.0.0.1)")
    ui.add_argument("--host", default="127.0.0.1", help="interface to bind; keep 127.0.0.1 unless you mean to share it [default: 127.0.0.1]")
    ui.add_argument("--port", type=int, default=5000, help="port [default: 5000]")
    ui.add_argument("--backend-store-uri", default=None, help="tracking store [default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db]")
    ui.add_argument("--optuna", metavar="STORAGE", default=None, help="also start optuna-dashboard on this Optuna storage (needs optuna-dashboard)")
    ui.set_defaults(func=cmd_ui)

    # Commands that live in their own runner modules register their parsers themselves.
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """A typo like --model.back must fail, not silently match --model.backbone."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


def _unknown_flag(parser: argparse.ArgumentParser, argv: list[str], unknown: list[str]) -> None:
    """Exit with one line naming the first unknown argument and the closest valid flag."""
    import difflib

    command = parser
    for token in argv:  # descend into the (sub)command the user named
        sub = next((a for a in command._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or token not in sub.choices:
            continue
        command = sub.choices[token]
    bad = unknown[0].split("=", 1)[0]
    flags = [o for a in command._actions for o in a.option_strings if o.startswith("--")]
    close = difflib.get_close_matches(bad, flags, n=1, cutoff=0.7)
    hint = f"; did you mean {close[0]}?" if close else f"; see {command.prog} --help"
    command.exit(2, f"{command.prog}: error: unrecognized argument {bad}{hint}\n")


def _one_line(e: BaseException) -> str:
    """The user-facing message; errors re-raised from DataLoader workers carry a traceback."""
    msg = str(e)
    if "Original Traceback" in msg:
        msg = msg.strip().splitlines()[-1].split(": ", 1)[-1]
    return msg


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cxrlab` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    ns, unknown = parser.parse_known_args(argv)
    if unknown:
        _unknown_flag(parser, argv, unknown)
    func: Callable[[argparse.Namespace], int] | None = getattr(ns, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(ns)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        if os.environ.get("CXRLAB_DEBUG"):
            raise
        print(f"cxrlab: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
