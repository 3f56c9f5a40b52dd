"""The table an evaluation runs on: known labels in their training splits, plus unseen labels."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pandas as pd

from cxrlab.config import DataConfig
from cxrlab.datamodules.datamodule import CXRDataModule, drop_skipped, verify_images
from cxrlab.datamodules.images import Decoding
from cxrlab.datamodules.sources import check_files, load_source, select_labels

UNSEEN = "unseen"  # the split name of rows whose label is not a model class


@dataclass
class EvaluationData:
    """Sample-table rows to evaluate (column `known`: label is a model class) and skipped files."""

    table: pd.DataFrame
    skipped: pd.DataFrame
    where: str


class _EvaluationDataModule(CXRDataModule):
    """CXRDataModule that tolerates splits missing a class (another dataset may lack some)."""

    def _check_splits(self, table: pd.DataFrame) -> None:
        # Training enforced class coverage; an evaluation reports whatever each split holds.
        return None


def evaluation_data(
    data: DataConfig, classes: list[str], seed: int, image_size: int
) -> EvaluationData:
    """Known-label rows with the split they had in training, then every row of an unseen label."""
    where = str(data.root)
    configured = data.classes
    if configured is not None and list(configured) != list(classes):
        raise ValueError(
            f"{where}: data.classes {list(configured)} disagree with the checkpoint's classes "
            f"{list(classes)}; drop --data.classes, or map labels with --data.label_map"
        )
    table = select_labels(load_source(data).table, data.label_map, None, "error")
    known = table["label"].isin(classes)
    if not known.any():
        found = sorted(table["label"].unique())
        raise ValueError(
            f"{where}: no image has a label the model knows {list(classes)} (labels found: "
            f"{found}); map them with --data.label_map, e.g. --data.label_map "
            f"'{{{found[0]}: {classes[0]}}}'"
        )
    # Same table, seed and split rule as training, so known rows land in their training splits;
    # classes absent from this data are left out so the split of the rest is still computed.
    present = [c for c in classes if c in set(table.loc[known, "label"])]
    split_data = copy.copy(data)  # the caller's config stays as it is
    split_data.classes, split_data.other_labels, split_data.image_size = present, "drop", image_size
    dm = _EvaluationDataModule(split_data, seed=seed)
    known_rows = dm.prepare_table().assign(known=True)
    unseen_rows, unseen_skipped = _unseen_rows(table[~known], data, where)
    rows = pd.concat([known_rows, unseen_rows], ignore_index=True)
    skipped = pd.concat([dm.skipped, unseen_skipped], ignore_index=True)
    return EvaluationData(rows, skipped, where)


def _unseen_rows(
    rows: pd.DataFrame, data: DataConfig, where: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of labels the model was not trained on, checked like the known ones."""
    rows = rows.assign(split=UNSEEN, known=False)
    check_files(rows, where)
    skipped = pd.DataFrame(columns=["path", "error"])
    if data.verify_images and len(rows):
        skipped = verify_images(rows["path"].tolist(), Decoding.from_data(data))
        if len(skipped):
            what = f"{where}: skipped {len(skipped)} unreadable image(s) of unseen labels"
            rows = drop_skipped(rows, skipped, what, data.strict)
    return rows, skipped
