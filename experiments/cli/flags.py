"""Flags shared by the commands: one `--section.key` flag per config option, and config paths."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cxrlab.config import Registry, bounds, iter_fields, range_text, registry_of, type_name

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
# What every command that takes a trained model accepts (cxrlab.experiments.tracking.checkpoints).
CHECKPOINT_HELP = (
    "a .ckpt written by `cxrlab train`; runs:/RUN_ID (that run's best checkpoint on the tracking "
    "store); or a logged model: models:/NAME@ALIAS, models:/NAME/VERSION or models:/MODEL_ID"
)

# Flags several commands take, defined once so that their spelling and help agree everywhere.
COMMON_FLAGS: dict[str, dict[str, Any]] = {
    "tracking_uri": {"default": None, "metavar": "URI",
                     "help": "MLflow tracking URI [default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db]"},
    "device": {"default": "auto", "help": "auto | cpu | cuda [default: auto]"},
    "quiet": {"action": "store_true", "help": "print only the end: no progress bars, no per-step lines"},
    "verbose": {"action": "store_true", "help": "print everything: library logs, and warnings with their source lines"},
}


def add_common_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the shared flags `names` (keys of COMMON_FLAGS) to `parser`."""
    for name in names:
        parser.add_argument(f"--{name}", **COMMON_FLAGS[name])


class _Names:
    """A registry's names, read when help is shown: reading them imports the implementations,
    which a command that only checks its config must not wait for."""

    def __init__(self, registry: Registry[Any]) -> None:
        self.registry = registry

    def __str__(self) -> str:
        return ", ".join(self.registry.names())


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
        registry = registry_of(tp)
        listed = " (each one of %(names)s)" if registry and registry.many else " (one of %(names)s)" if registry else ""
        action = groups[section].add_argument(
            f"--{key}",
            dest=f"cfg:{key}",
            metavar=type_name(tp).upper(),
            default=argparse.SUPPRESS,
            help=help_text.replace("%", "%%") + listed + f" [default: {shown}]".replace("%", "%%"),
        )
        if registry is not None:
            action.names = _Names(registry)  # argparse fills %(names)s from the action's attributes


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


class _OldSpelling(argparse.Action):
    """A flag's spelling before flags took one style (underscores, like the config keys): still
    accepted for one release, hidden from --help, with a warning naming the new spelling."""

    def __init__(self, option_strings: list[str], dest: str, new: argparse.Action, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=new.nargs, const=new.const, type=new.type,
                         default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        print(f"cxrlab: warning: {option_string} is now spelled {self.new.option_strings[0]}; "
              "the old spelling goes in the next release", file=sys.stderr)
        self.new(parser, ns, values, option_string)


# The hyphenated flags of version 0.1; each is accepted, with a warning, until the next release.
OLD_SPELLINGS = (
    "--n-trials", "--study-name", "--n-per-class", "--max-per-class", "--n-boot", "--lung-mask",
    "--backend-store-uri",
)


def keep_old_spellings(parser: argparse.ArgumentParser) -> None:
    """Accept each OLD_SPELLINGS flag for its underscore spelling where `parser` has that flag."""
    for action in list(parser._actions):
        for flag in action.option_strings:
            if (old := flag.replace("_", "-")) in OLD_SPELLINGS:
                parser._add_action(_OldSpelling([old], action.dest, action))
