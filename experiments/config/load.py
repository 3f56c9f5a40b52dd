"""Reading, building and writing configs: YAML files, dotted overrides, plain dicts, MLflow params."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

from experiments.config.errors import ConfigError
from experiments.config.lenient import loosen
from experiments.config.messages import config_error
from experiments.config.schema import Config


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `d['a']['b'] = value` for `dotted='a.b'`, creating sections as needed."""
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


def _yaml_where(e: yaml.YAMLError) -> str:
    """' at line 3, column 7 (mapping values are not allowed here)' from a YAML error, on one line."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None)
    return f"{where} ({problem})" if problem else where


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing YAML (see experiments/configs/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML{_yaml_where(e)}; fix the syntax there") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data:, model:, ...)")
    return raw


def from_dict(raw: dict[str, Any], where: str = "config") -> Config:
    """Build and validate a Config from a nested dict (a YAML file's, or a checkpoint's to_dict)."""
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise config_error(e, where) from None


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    extra_sections: tuple[str, ...] = (),
) -> Config:
    """Load YAML (optional), apply dotted overrides, validate.

    `extra_sections` are top-level keys that another runner reads itself (a sweep's `search:`)
    and that are dropped here.
    """
    raw = read_yaml(path) if path else {}
    for key in extra_sections:
        raw.pop(key, None)
    where = str(path) if path else "config"
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    if overrides:
        where = f"{where} (with overrides)"
    return from_dict(raw, where)


@cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp, config=ConfigDict(coerce_numbers_to_str=True))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` as the schema type `tp` (command-line text read as the config reads it), or a
    ConfigError naming `where`: how a sweep's search block checks the values it will set."""
    try:
        return _adapter(tp).validate_python(loosen(value, tp))
    except ValidationError as e:
        raise config_error(e, where, tp) from None
    except ValueError as e:  # text that loosen() cannot read as a list or mapping
        raise ConfigError(f"{where}: {e}") from None


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain nested dicts (YAML / checkpoint / MLflow friendly)."""
    return cfg.model_dump()


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
