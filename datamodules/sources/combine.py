"""Several downloaded datasets side by side under one data.root, read as one table.

data.combine maps a source name to its folder under data.root ({coronahack: archive,
cohen: covid-chestxray-dataset}); empty, every sub-folder that `auto` recognises is read.
data.combine_labels keeps only some labels of a source ({cohen: [covid]}: Cohen's COVID images).
The table's `source` column tells the parts apart.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import detect_source, get_source, register, source_names

GENERIC = ("csv", "folder", "combine")  # `auto` falls back to these; they never name a part


def parts(root: Path, options: SourceOptions) -> dict[str, Path]:
    """source name -> folder of each part, from data.combine or by detecting sub-folders."""
    if options.combine:
        out = {}
        for name, folder in options.combine.items():
            get_source(name)  # an unknown name fails here, with the list of valid ones
            path = Path(folder) if Path(folder).is_absolute() else root / folder
            if not path.exists():
                raise FileNotFoundError(f"{path}: data.combine.{name} does not exist under data.root {root}")
            out[name] = path
        return out
    found: dict[str, Path] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
        name = detect_source(sub, exclude=("combine",))  # parts are datasets, not collections
        if name in GENERIC:
            continue
        if name in found:
            raise ValueError(
                f"{root}: {found[name].name}/ and {sub.name}/ both look like {name}; name the one "
                "to use in data.combine"
            )
        found[name] = sub
    return found


def _is_combined(root: Path) -> bool:
    return root.is_dir() and len(parts(root, SourceOptions())) >= 2


@register(
    "combine",
    summary="several datasets side by side (data.combine, data.combine_labels); a source column tells them apart",
    folder="the folder holding the downloaded datasets as sub-folders",
    detect=_is_combined,
)
def load_combine(root: Path, options: SourceOptions) -> pd.DataFrame:
    """The parts' tables stacked; data.combine_labels filters each part's labels."""
    found = parts(root, options)
    unknown = sorted(set(options.combine_labels) - set(found))
    if unknown:
        raise ValueError(f"{root}: data.combine_labels names {unknown}, which are not parts here ({sorted(found)})")
    if len(found) < 2:
        raise ValueError(
            f"{root}: data.source=combine found {len(found)} dataset(s) ({sorted(found)}); put two or "
            f"more downloads under data.root or list them in data.combine ({', '.join(source_names())})"
        )
    tables = []
    for name, path in found.items():
        table = get_source(name).load(path, options)
        keep = options.combine_labels.get(name)
        if keep is not None:
            table = table[table["label"].isin(keep)]
            if table.empty:
                raise ValueError(f"{path}: no {name} images with label(s) {list(keep)} (data.combine_labels)")
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    if "official_split" in table.columns:  # a part without an official split has none to offer
        table["official_split"] = table["official_split"].fillna("")
    return table
