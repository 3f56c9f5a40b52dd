"""Flags shared by the commands: one `--section.key` flag per config option, and config paths."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from experiments.config import bounds, iter_fields, range_text, type_name

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


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
