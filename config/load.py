"""Reading, building and writing configs: YAML files, dotted overrides, plain dicts, MLflow params."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from cxrlab.config.errors import ConfigError
from cxrlab.config.fields import field_type, is_section, registry_of
from cxrlab.config.lenient import loosen
from cxrlab.config.messages import config_error
from cxrlab.config.schema import Config


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


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of settings; a larger file is not one
MAX_YAML_NODES = 100_000  # values in a config once its aliases are expanded (a billion laughs: 10^9)


def _expanded_nodes(node: yaml.Node, memo: dict[int, int], path: frozenset[int]) -> int:
    """How many values `node` stands for once every alias in it is copied out (memoised per
    node, so a shared alias is counted per use without being walked again)."""
    if id(node) in path:
        raise ValueError("an alias refers to itself (a recursive structure)")
    if id(node) not in memo:
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        inner = path | {id(node)}
        memo[id(node)] = 1 + sum(_expanded_nodes(child, memo, inner) for child in children)
    return memo[id(node)]


def safe_yaml(text: str, where: str) -> Any:
    """YAML read safely: no Python objects, and aliases refused once they would expand the
    document beyond MAX_YAML_NODES values (validation and messages walk the expanded value)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            size = _expanded_nodes(node, {}, frozenset())
        except ValueError as e:
            raise ConfigError(f"{where}: {e}; write the values out") from None
        if size > MAX_YAML_NODES:
            raise ConfigError(
                f"{where}: its aliases (&/*) expand to {size:,} values, more than a config's "
                f"{MAX_YAML_NODES:,}; write the values out instead of nesting aliases"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


MAX_TABLE_BYTES = 1 << 30  # a metadata table or index; the largest public CXR tables are ~0.1 GB


def check_size(path: str | Path, limit: int, what: str) -> Path:
    """`path`, refused in one line when the file is larger than `limit` bytes."""
    path = Path(path)
    size = path.stat().st_size
    if size > limit:
        raise ConfigError(f"{path}: {size:,} bytes is too large for {what} (at most {limit:,}); is it the right file?")
    return path


def read_text_capped(path: Path, limit: int, what: str) -> str:
    """The text of `path`, refused in one line when it is larger than `limit` bytes."""
    return check_size(path, limit, what).read_text()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing YAML (see experiments/configs/)")
    try:
        raw = safe_yaml(read_text_capped(path, MAX_CONFIG_BYTES, "a config"), str(path)) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML{_yaml_where(e)}; fix the syntax there") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data:, model:, ...)")
    return raw


def _registered(value: Any, tp: Any, where: str, *, named: bool = True, key: str | None = None) -> None:
    """Raise a ConfigError naming `where` when a registry-typed value is not registered (the
    message names the key too, unless `where` already does)."""
    registry = registry_of(tp)
    if registry is None or value is None:
        return
    for name in value if isinstance(value, list) else [value]:
        try:
            registry.check(name, named=named, key=key)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None


def check_registered(section: BaseModel, where: str = "config", prefix: str = "") -> None:
    """Check every registry-typed value of a validated config against its registry."""
    for name, info in type(section).model_fields.items():
        value = getattr(section, name)
        if is_section(info.annotation):
            check_registered(value, where, f"{prefix}{name}.")
        else:
            _registered(value, field_type(info), where, key=f"{prefix}{name}")


def from_dict(raw: dict[str, Any], where: str = "config") -> Config:
    """Build and validate a Config from a nested dict (a YAML file's, or a checkpoint's to_dict).

    Keys, types and ranges are checked first; the names of registered choices after them, since
    those read the registries, whose first use imports the implementations (torch among them)."""
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise config_error(e, where) from None
    check_registered(cfg, where)
    return cfg


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
        value = _adapter(tp).validate_python(loosen(value, tp))
    except ValidationError as e:
        raise config_error(e, where, tp) from None
    except ValueError as e:  # text that loosen() cannot read as a list or mapping
        raise ConfigError(f"{where}: {e}") from None
    _registered(value, tp, where, named=False)
    return value


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
