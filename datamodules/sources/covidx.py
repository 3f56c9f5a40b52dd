"""COVIDx CXR: index files train.txt / test.txt [/ val.txt] and image folders train/, test/ [val/].

Each index line is `patientid filename label [source]`. Patient ids may contain spaces (sirm
rows), so a line is parsed from the right: the label is the last label word, the optional source
follows it, the file name precedes it and everything before is the patient id.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrlab.config import MAX_TABLE_BYTES, check_size
from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import register
from cxrlab.datamodules.sources.table import make_table

LABELS = {"covid-19": "covid", "positive": "covid", "normal": "normal", "pneumonia": "pneumonia",
          "negative": "non_covid"}
SPLITS = ("train", "val", "test")


def index_files(root: Path) -> dict[str, Path]:
    """split -> its index file (train.txt, or a versioned train_COVIDx9A.txt)."""
    out = {}
    for split in SPLITS:
        exact = root / f"{split}.txt"
        found = [exact] if exact.is_file() else sorted(root.glob(f"{split}_*.txt"))
        if found:
            out[split] = found[0]
    return out


def parse_line(line: str, folder: Path) -> tuple[str, str, str, str]:
    """(patient id, file name, raw label, source) of one index line, parsed from the right."""
    tokens = line.split()
    at = max((i for i, t in enumerate(tokens) if t.lower() in LABELS), default=None)
    if at is None or at < 2:
        raise ValueError(f"expected 'patientid filename label [source]', got {line.strip()!r}")
    source = " ".join(tokens[at + 1:])
    # The file name is one token unless the file on disk says it has spaces too.
    take = 1
    for k in range(at - 1, 1, -1):
        if (folder / " ".join(tokens[at - k:at])).is_file():
            take = k
            break
    return " ".join(tokens[: at - take]), " ".join(tokens[at - take:at]), tokens[at], source


def _is_covidx(root: Path) -> bool:
    found = index_files(root)
    return "train" in found and "test" in found and (root / "train").is_dir()


@register(
    "covidx",
    summary="COVIDx CXR (COVID-19/positive -> covid, normal, pneumonia, negative -> non_covid)",
    folder="the folder holding train.txt, test.txt, train/ and test/",
    detect=_is_covidx,
    official_split=True,
)
def load_covidx(root: Path, options: SourceOptions) -> pd.DataFrame:
    """One row per index line; the index file gives the official split."""
    files = index_files(root)
    if "train" not in files and "test" not in files:
        raise FileNotFoundError(f"{root}: no train.txt / test.txt; point data.root at the COVIDx folder")
    rows = []
    for split, index in files.items():
        folder = root / split if (root / split).is_dir() else root / "train"
        text = check_size(index, MAX_TABLE_BYTES, "a split list").read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                patient, name, raw, origin = parse_line(line, folder)
            except ValueError as e:
                raise ValueError(f"{index}:{n}: {e}") from None
            rows.append({
                "path": str((folder / name).absolute()),
                "label": LABELS[raw.lower()],
                "patient_id": patient,
                "origin": origin,
                "official_split": split,
            })
    return make_table(rows, "covidx", root)
