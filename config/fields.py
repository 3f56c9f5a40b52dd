"""Walking the schema: what `--help`, the sweep checks and the error messages read from it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from cxrlab.config.lenient import optional_inner
from cxrlab.config.registry import Registry, registry_in
from cxrlab.config.schema import Config

# Lower bounds first, so a range reads '>= 0 and < 1'.
_BOUNDS = {"ge": (annotated_types.Ge, ">="), "gt": (annotated_types.Gt, ">"),
           "le": (annotated_types.Le, "<="), "lt": (annotated_types.Lt, "<")}


def is_section(tp: Any) -> bool:
    """Whether a field's type is a nested section."""
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _item(tp: Any) -> Any:
    """The type of one value of a field: inside Optional, and an item of a list."""
    tp, _ = optional_inner(tp)
    return get_args(tp)[0] if get_origin(tp) in (list, tuple) else tp


def registry_of(tp: Any, info: FieldInfo | None = None) -> Registry[Any] | None:
    """The registry whose names a field takes (`Annotated[str, REGISTRY]`, also in a list), or None."""
    if info is not None and (found := registry_in(info.metadata)) is not None:
        return found
    item = _item(tp)
    return registry_in(item.__metadata__) if get_origin(item) is Annotated else None


def field_type(info: FieldInfo) -> Any:
    """A field's type as the schema declares it, keeping the registry a choice field is typed with."""
    found = registry_in(info.metadata)
    return Annotated[info.annotation, found] if found is not None else info.annotation


def choices(tp: Any, info: FieldInfo | None = None) -> tuple[str, ...] | None:
    """The values a field may take (its Literal or registry, also inside Optional or list), or None."""
    extra = info.json_schema_extra if info is not None and isinstance(info.json_schema_extra, dict) else {}
    if "choices" in extra:
        return tuple(extra["choices"])
    if (found := registry_of(tp, info)) is not None:
        return found.names()
    item = _item(tp)
    return get_args(item) if get_origin(item) is Literal else None


def help_text(tp: Any, info: FieldInfo) -> str:
    """The field's description, with its choices when they are a closed Literal (a registry's
    names are listed where help is shown, so reading the schema imports no implementation)."""
    values = None if registry_of(tp, info) is not None else choices(tp, info)
    if values is None:
        return info.description or ""
    each = "each " if get_origin(optional_inner(tp)[0]) is list else ""
    return f"{info.description} ({each}one of {', '.join(values)})"


def iter_fields(cls: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, Any, Any, str]]:
    """Yield (dotted key, type, default, help) for every leaf option of the schema."""
    for name, info in cls.model_fields.items():
        key = f"{prefix}{name}"
        if is_section(info.annotation):
            yield from iter_fields(info.annotation, key + ".")
        else:
            yield key, field_type(info), info.get_default(call_default_factory=True), help_text(info.annotation, info)


def field_bounds(info: FieldInfo) -> dict[str, float]:
    """{ge/gt/le/lt: bound} that a field declares, lower bounds first."""
    return {
        name: getattr(m, name)
        for name, (kind, _) in _BOUNDS.items()
        for m in info.metadata
        if isinstance(m, kind)
    }


def bounds(cls: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, dict[str, float]]]:
    """Yield (dotted key, {ge/gt/le/lt: bound}) for every numeric option that declares a range."""
    for name, info in cls.model_fields.items():
        if is_section(info.annotation):
            yield from bounds(info.annotation, f"{prefix}{name}.")
        elif rng := field_bounds(info):
            yield f"{prefix}{name}", rng


def range_text(rng: dict[str, float]) -> str:
    """'>= 0 and < 1' for {ge: 0, lt: 1}."""
    return " and ".join(f"{_BOUNDS[k][1]} {v:g}" for k, v in rng.items())


def type_name(tp: Any) -> str:
    """A short human name for a schema type."""
    inner, nullable = optional_inner(tp)
    if nullable:
        return type_name(inner) + "?"
    origin = get_origin(tp)
    if origin is list:
        return f"list[{type_name(get_args(tp)[0])}]"
    if origin is dict:
        return "map"
    if origin is Literal or registry_of(tp) is not None:
        return "choice"
    return getattr(tp, "__name__", str(tp))


def locate(loc: tuple[int | str, ...], root: Any = Config) -> tuple[str, Any, FieldInfo | None]:
    """(dotted key, type, the last named field's info) of a pydantic error location under `root`;
    list positions read `[i]`, as in data.split[0]."""
    key, tp, info = "", root, None
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
            tp = get_args(optional_inner(tp)[0])[0] if get_origin(optional_inner(tp)[0]) in (list, tuple) else None
            continue
        if part == "[key]":  # pydantic's marker for a mapping's key itself
            continue
        inner = optional_inner(tp)[0]
        if is_section(inner) and part in inner.model_fields:
            info = inner.model_fields[part]
            tp = info.annotation
        elif get_origin(inner) is dict:
            tp = get_args(inner)[1]
        else:
            tp = None
        key = f"{key}.{part}" if key else str(part)
    return key, tp, info

