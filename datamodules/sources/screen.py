"""Checks every source's table gets: data-root escapes, missing files and masks, duplicates.

A row that cannot be used is skipped with a reason that names the file, and listed in the run's
skipped_images.csv; data.strict turns the first such reason into an error instead.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.table import OPTIONAL_PATHS, SKIP, SKIPPED_COLUMNS

STRICT_HINT = "(data.strict is on; fix the data or set --data.strict false to skip such rows)"


def strict_error(error: str) -> ValueError:
    """The error data.strict raises for a row that would be skipped."""
    return ValueError(f"{error} {STRICT_HINT}")


def refuse_outside_root(table: pd.DataFrame, root: Path, options: SourceOptions) -> None:
    """Every referenced file must resolve inside `root` unless data.allow_outside_root is set."""
    if options.allow_outside_root:
        return
    base = root.resolve()
    for col in ("path", *OPTIONAL_PATHS):
        if col not in table.columns:
            continue
        for p in table[col].dropna():
            if p and not Path(p).resolve().is_relative_to(base):
                raise ValueError(
                    f"{p}: resolves to {Path(p).resolve()}, outside data.root {base} (a ../ path, "
                    "an absolute path or a symlink); move it under the root or set "
                    "data.allow_outside_root: true"
                )


def screen(
    table: pd.DataFrame, root: Path, options: SourceOptions, where: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(usable rows, skipped (path, error) rows) after the checks every source shares."""
    refuse_outside_root(table, root, options)
    skipped: list[tuple[str, str]] = []

    def drop(mask: pd.Series, reasons: pd.Series) -> None:
        nonlocal table
        for path, reason in zip(table.loc[mask, "path"], reasons[mask], strict=True):
            if options.strict:
                raise strict_error(f"{path}: {reason}")
            skipped.append((path, f"{path}: {reason}"))
        table = table[~mask]

    if SKIP in table.columns:
        drop(table[SKIP] != "", table[SKIP])
        table = table.drop(columns=SKIP)
    exists = table["path"].map(lambda p: Path(p).is_file())
    drop(~exists, pd.Series("listed in the metadata but the file is missing", index=table.index))
    dup = table["path"].duplicated(keep="first")
    if dup.any():
        warnings.warn(
            f"{where}: dropped {int(dup.sum())} duplicate metadata row(s) (same file listed again), "
            f"e.g. {table.loc[dup, 'path'].iloc[0]}",
            stacklevel=3,
        )
    drop(dup, pd.Series("duplicate metadata row (the same file is listed earlier)", index=table.index))
    table = table.copy()
    for col in OPTIONAL_PATHS:
        if col not in table.columns:
            continue
        gone = table[col].map(lambda p: isinstance(p, str) and bool(p) and not Path(p).is_file())
        for path, mask in zip(table.loc[gone, "path"], table.loc[gone, col], strict=True):
            error = f"{path}: {col.removesuffix('_path')} mask {mask} is missing; the image is kept without a focus score"
            if options.strict:
                raise strict_error(error)
            skipped.append((mask, error))
        table.loc[gone, col] = None
    out = pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)
    if len(out):
        warnings.warn(
            f"{where}: skipped {len(out)} row(s) or mask(s), e.g. {out['error'].iloc[0]} (all listed "
            "in the run's skipped_images.csv)",
            stacklevel=3,
        )
    return table.reset_index(drop=True), out
