"""The data.* settings that change what a source reads and what it skips."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from experiments.config import DataConfig

_DEFAULTS = DataConfig()


@dataclass(frozen=True)
class SourceOptions:
    """Reading options: the data config's values (`from_data`), its defaults otherwise."""

    strict: bool = _DEFAULTS.strict
    allow_outside_root: bool = _DEFAULTS.allow_outside_root
    views: tuple[str, ...] = tuple(_DEFAULTS.views)
    modalities: tuple[str, ...] = tuple(_DEFAULTS.modalities)
    combine: Mapping[str, str] = field(default_factory=dict)
    combine_labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> SourceOptions:
        """The options of a data config dict (keys it lacks keep their defaults)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name in ("views", "modalities"):
                value = tuple(value)
            elif f.name == "combine_labels":
                value = {k: tuple([v] if isinstance(v, str) else v) for k, v in value.items()}
            values[f.name] = value
        return cls(**values)

    def view_allowed(self, view: str) -> bool:
        """Case- and space-insensitive membership in `views`."""
        return _norm(view) in {_norm(v) for v in self.views}

    def modality_allowed(self, modality: str) -> bool:
        """Case- and space-insensitive membership in `modalities`."""
        return _norm(modality) in {_norm(m) for m in self.modalities}


def _norm(text: str) -> str:
    return " ".join(str(text).lower().replace("_", " ").split())
