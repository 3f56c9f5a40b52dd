"""pydantic's validation errors as the project's one-line messages, which name the key and the fix."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from cxrlab.config.errors import WHOLE_LINE, ConfigError, did_you_mean, first_line, shown
from cxrlab.config.fields import choices, field_bounds, is_section, locate, range_text
from cxrlab.config.schema import Config

_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "list_type": "a list", "tuple_type": "a list", "dict_type": "a mapping like {a: b}",
}
_RANGE = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_NOT_A_MAPPING = ("model_type", "model_attributes_type", "dict_type")


def _at(key: str, text: str) -> str:
    return f"{key}: {text}" if key else text


def message(err: ErrorDetails, root: Any = Config) -> str:
    """One error of a ValidationError as one line (without the file name)."""
    kind, loc, value = err["type"], tuple(err["loc"]), err.get("input")
    key, tp, info = locate(loc, root)
    if kind == WHOLE_LINE:
        return str(err["ctx"]["line"])
    if kind == "extra_forbidden":
        *parent, name = loc
        _, section, _ = locate(tuple(parent), root)
        # An excluded field is filled by the schema itself (a sweep parameter's name), never written.
        names = sorted(n for n, f in section.model_fields.items() if not f.exclude)
        return f"unknown key '{key}'{did_you_mean(str(name), names)}; valid keys here: {', '.join(names)}"
    if kind in _NOT_A_MAPPING and is_section(tp):
        return f"'{key or 'top level'}' must be a mapping"
    if kind in _EXPECTED:
        return _at(key, f"expected {_EXPECTED[kind]}, got {shown(value)}")
    if kind in _RANGE and info is not None:
        number = shown(value).strip("'")
        return f"{key}={number} is out of range; it must be {range_text(field_bounds(info))}"
    if kind == "literal_error":
        if loc and isinstance(loc[-1], int):  # an item of a list of choices names the list
            key, tp, info = locate(loc[:-1], root)
            values = choices(tp, info) or ()
            return f"{key} has {shown(value)}; choose from {', '.join(values)}{did_you_mean(str(value), values)}"
        values = choices(tp, info) or ()
        named = f"{key}={shown(value)}" if key else shown(value)
        return f"{named} is not one of {', '.join(values)}{did_you_mean(str(value), values)}"
    if kind == "value_error":
        return _at(key, str(err["ctx"]["error"]))
    return _at(key, first_line(ValueError(err["msg"])))


def config_error(err: ValidationError, where: str, root: Any = Config) -> ConfigError:
    """The first error of `err` as a ConfigError naming `where` (a file, or 'config')."""
    return ConfigError(f"{where}: {message(err.errors()[0], root)}")
