"""Data sources: each dataset adapter decorates its loader with `@register(...)`, which adds a
Source to the data.source registry (cxrlab.config.registry.SOURCES); config validation,
`cxrlab data sources`, `auto` detection and dispatch read that one table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cxrlab.config import SOURCES

if TYPE_CHECKING:
    import pandas as pd

    from cxrlab.datamodules.sources.options import SourceOptions

Loader = Callable[[Path, "SourceOptions"], "pd.DataFrame"]
Detector = Callable[[Path], bool]


@dataclass(frozen=True)
class Source:
    """One dataset adapter: how to read a root, how to recognise one, where to point data.root."""

    name: str
    load: Loader
    detect: Detector | None  # None: never chosen by `auto` (too generic or needs options)
    summary: str
    folder: str  # what data.root points at, as the dataset is downloaded
    official_split: bool = False  # the table carries the dataset's own split (official_split)
    findings: tuple[str, ...] = ()  # multi-label sources: the dataset's own findings (data.labels default)


def register(
    name: str,
    *,
    summary: str,
    folder: str,
    detect: Detector | None = None,
    official_split: bool = False,
    findings: tuple[str, ...] = (),
) -> Callable[[Loader], Loader]:
    """Decorator: register a loader as the data source `name`."""

    def add(load: Loader) -> Loader:
        SOURCES.add(name, Source(name, load, detect, summary, folder, official_split, findings))
        return load

    return add


def source_names() -> tuple[str, ...]:
    """Registered source names in registration order (auto is not one of them)."""
    return tuple(SOURCES)


def get_source(name: str) -> Source:
    """The adapter called `name`; a one-line error lists the valid names."""
    return SOURCES.get(name)


def detect_source(root: Path, exclude: tuple[str, ...] = ()) -> str:
    """The one source whose detector accepts `root`; a CSV file or class folders when none does."""
    hits = [
        name for name in SOURCES
        if (s := get_source(name)).detect is not None and name not in exclude and s.detect(root)
    ]
    if len(hits) > 1:
        raise ValueError(
            f"{root}: data.source=auto is ambiguous (looks like {', '.join(hits)}); set "
            "--data.source to one of them"
        )
    if hits:
        return hits[0]
    return "csv" if root.is_file() else "folder"
