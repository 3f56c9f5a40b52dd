"""The data.* settings that change what a source reads and what it skips."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cxrlab.config import DataConfig

_DEFAULTS = DataConfig()


@dataclass(frozen=True)
class SourceOptions:
    """Reading options: a data config's values (`from_data`); the schema's defaults for callers without one."""

    strict: bool = _DEFAULTS.strict
    allow_outside_root: bool = _DEFAULTS.allow_outside_root
    views: tuple[str, ...] = tuple(_DEFAULTS.views)
    modalities: tuple[str, ...] = tuple(_DEFAULTS.modalities)
    combine: Mapping[str, str] = field(default_factory=dict)
    combine_labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: DataConfig) -> SourceOptions:
        """The reading options of a data config section."""
        return cls(
            strict=data.strict,
            allow_outside_root=data.allow_outside_root,
            views=tuple(data.views),
            modalities=tuple(data.modalities),
            combine=dict(data.combine),
            combine_labels={k: tuple(v) for k, v in data.combine_labels.items()},
        )

    def view_allowed(self, view: str) -> bool:
        """Case- and space-insensitive membership in `views`."""
        return _norm(view) in {_norm(v) for v in self.views}

    def modality_allowed(self, modality: str) -> bool:
        """Case- and space-insensitive membership in `modalities`."""
        return _norm(modality) in {_norm(m) for m in self.modalities}


def _norm(text: str) -> str:
    return " ".join(str(text).lower().replace("_", " ").split())
