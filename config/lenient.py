"""Command-line text and loose YAML shaped for a field before pydantic checks it.

Overrides arrive as strings ("0.8,0.1,0.1", "a:b,c:d", "null"); pydantic already reads "2e-4" as a
float and "yes" as a bool, but not a list or a mapping from text. It would also read True as 1,
which hides a mistake, so booleans are refused for numbers here.
"""

from __future__ import annotations

import types
import typing
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel

NULLS = ("null", "none", "~")


class Refused:
    """A value pydantic would convert but the config refuses (True for a number): it fails
    validation, so the error names its own position (data.split[1]) and shows the value."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def optional_inner(tp: Any) -> tuple[Any, bool]:
    """(the type inside Optional[...], whether None is allowed)."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = get_args(tp)
        inner = [a for a in args if a is not type(None)]
        return inner[0], type(None) in args
    return tp, False


def parse_mapping(text: str) -> Any:
    """'{a: b}' (YAML) or 'a:b,c:d' from the command line."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise ValueError(f"{text!r} is not a valid YAML mapping") from None
    pairs = [p.split(":", 1) for p in text.split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"expected key:value pairs like a:b,c:d, got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def loosen(value: Any, tp: Any, join_list: bool = False) -> Any:
    """`value` reshaped for type `tp` where the text form is unambiguous; validation does the rest."""
    if join_list and isinstance(value, list):
        return ",".join(str(v) for v in value)  # devices: [0, 1] in YAML means "0,1"
    inner, nullable = optional_inner(tp)
    if value is None or (nullable and isinstance(value, str) and value.strip().lower() in NULLS):
        # An empty section (`data:` in YAML) means its defaults.
        return {} if isinstance(inner, type) and issubclass(inner, BaseModel) else None
    origin = get_origin(inner)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        (item,) = get_args(inner)
        return [loosen(v, item) for v in value] if isinstance(value, (list, tuple)) else value
    if origin is dict:
        if isinstance(value, str):
            value = parse_mapping(value)
        _, item = get_args(inner)
        return {k: loosen(v, item) for k, v in value.items()} if isinstance(value, dict) else value
    return Refused(value) if isinstance(value, bool) and inner in (int, float) else value
