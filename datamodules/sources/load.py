"""data.source + data.root -> the screened sample table and the list of what was skipped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxrlab.config import DataConfig
from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import detect_source, get_source
from cxrlab.datamodules.sources.screen import screen


@dataclass
class Loaded:
    """A source's usable rows and its skipped (path, error) rows."""

    table: pd.DataFrame
    skipped: pd.DataFrame
    source: str  # the adapter that read it (auto resolved)


def data_root(root: str | Path | None) -> Path:
    """data.root as an existing path, or a one-line error saying how to get one."""
    if root is None:
        raise ValueError(
            "data.root is not set; point it at a dataset (e.g. --data.root data/phantom after "
            "`cxrlab data phantom data/phantom`)"
        )
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: data.root does not exist; generate a phantom set with "
            f"`cxrlab data phantom {path}` or point data.root at your dataset"
        )
    return path


def read_source(source: str, root: str | Path | None, options: SourceOptions) -> Loaded:
    """Run one adapter and the shared checks on its table."""
    path = data_root(root)
    name = detect_source(path) if source == "auto" else get_source(source).name
    raw = get_source(name).load(path, options)
    base = path.parent if path.is_file() else path
    table, skipped = screen(raw, base, options, str(path))
    if table.empty:
        raise ValueError(
            f"{path}: every row was skipped ({len(skipped)}), e.g. {skipped['error'].iloc[0]}"
        )
    return Loaded(table, skipped, name)


def load_source(data: DataConfig) -> Loaded:
    """The screened table of a data config (source, root and the reading options)."""
    return read_source(data.source, data.root, SourceOptions.from_data(data))


def load_table(
    source: str, root: str | Path | None, options: SourceOptions | None = None
) -> pd.DataFrame:
    """The usable rows only (skips are warned about); see `load_source` for the skipped list."""
    return read_source(source, root, options or SourceOptions()).table
