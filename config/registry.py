"""Registries of the extensible choices, kept apart from what they register (as timm's model
registry is): heatmap methods, heads, optimisers, schedules and data sources.

Each implementation registers itself where it is defined, with a decorator. The schema types the
config key with the registry (`Annotated[str, HEADS]`), so `--help`, validation with did-you-mean
and dispatch all read the one registration. The built-ins are imported on a registry's first use
by the loader that the `cxrlab` package installs (this layer imports nothing above it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from cxrlab.config.errors import ConfigError, did_you_mean, shown

T = TypeVar("T")
_builtins: list[Callable[[], None]] = []  # imports the modules that register the built-ins


def load_builtins_with(loader: Callable[[], None]) -> None:
    """Install what imports the built-in registrations (called by the `cxrlab` package)."""
    _builtins[:] = [loader]


def _load_builtins() -> None:
    while _builtins:
        _builtins.pop()()  # popped first: the imports it runs may read a registry again


class Registry(Generic[T]):
    """Names of one config key's choices -> what implements each."""

    def __init__(self, key: str, *, many: bool = False, also: tuple[str, ...] = ()) -> None:
        self.key = key  # the config key these names are the values of
        self.many = many  # the key holds a list of names
        self.also = also  # values the key takes that are not registered (data.source: auto)
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register `entry` under `name`; a second registration of a name is an error."""
        if name in self._entries or name in self.also:
            raise ValueError(f"{self.key}: {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated function or class under `name`."""
        return lambda entry: self.add(name, entry)

    def unregister(self, name: str) -> None:
        """Remove `name` (a plugin replacing a built-in, or a test's toy entry)."""
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """Every value the key takes, in registration order (built-ins first)."""
        _load_builtins()
        return (*self.also, *self._entries)

    def check(self, name: str, *, named: bool = True, key: str | None = None) -> str:
        """`name` if the key takes it, else a one-line ConfigError with the choices (and the key,
        when `named`: `key`, where another key than the registry's own takes its values)."""
        valid = self.names()
        if name in valid:
            return name
        options = f"{', '.join(valid)}{did_you_mean(str(name), valid)}"
        if not named:
            raise ConfigError(f"{shown(name)} is not one of {options}")
        key = key or self.key
        if self.many:
            raise ConfigError(f"{key} has {shown(name)}; choose from {options}")
        raise ConfigError(f"{key}={shown(name)} is not one of {options}")

    def get(self, name: str) -> T:
        """What `name` registers (a one-line ConfigError for an unknown name)."""
        self.check(name)
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names()[len(self.also):])

    def __repr__(self) -> str:
        return f"Registry({self.key!r})"


def registry_in(metadata: list[Any] | tuple[Any, ...]) -> Registry[Any] | None:
    """The registry among a field's Annotated metadata, if any."""
    return next((m for m in metadata if isinstance(m, Registry)), None)


# The extensible choices: the config key each registry's names are the values of.
METHODS: Registry[Any] = Registry("explain.methods", many=True)
HEADS: Registry[Any] = Registry("model.head")
OPTIMIZERS: Registry[Any] = Registry("model.optimizer")
SCHEDULERS: Registry[Any] = Registry("model.scheduler")
SOURCES: Registry[Any] = Registry("data.source", also=("auto",))
