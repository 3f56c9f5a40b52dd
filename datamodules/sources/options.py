"""The data.* settings that change what a source reads and what it skips."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class SourceOptions:
    """Reading options; `from_data` takes them from the resolved data config.

    The defaults here only serve direct calls (tests, notebooks); a config-driven run always
    passes the config's values, and a test keeps both sets equal.
    """

    strict: bool = False
    allow_outside_root: bool = False
    min_image_size: int = 64
    views: tuple[str, ...] = ("PA", "AP", "AP Supine", "AP semi erect", "AP erect")
    modalities: tuple[str, ...] = ("X-ray",)
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
