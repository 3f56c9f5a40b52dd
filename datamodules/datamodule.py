"""CXRDataModule: sample table -> verified, balanced, split datasets and loaders."""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Subset

from cxrlab.config import DataConfig
from cxrlab.datamodules.decode_cache import DecodeCache
from cxrlab.datamodules.image_header import small_images
from cxrlab.datamodules.images import DEFAULT_DECODING, Decoding, read_image
from cxrlab.datamodules.loader_workers import start_worker
from cxrlab.datamodules.multilabel_splits import multilabel_holdout_split, multilabel_kfold_split
from cxrlab.datamodules.sources import load_source, resolve_classes, select_labels
from cxrlab.datamodules.sources.screen import strict_error
from cxrlab.datamodules.sources.table import SKIPPED_COLUMNS
from cxrlab.datamodules.splits import (
    TRAIN_BALANCE,
    class_weights,
    downsample,
    holdout_split,
    kfold_split,
    official_split,
    oversample_index,
    split_leaks,
)
from cxrlab.datamodules.targets import (
    class_targets,
    label_targets,
    pos_weights,
    resolve_labels,
    resolve_task,
)
from cxrlab.datamodules.transforms import eval_transform, train_transform


class CXRDataset(Dataset):
    """Images of a sample table as ([1, S, S] float tensor in [0, 1], class index) pairs.

    Labels outside `classes` get index -1 (evaluate reports unseen classes; training never sees them).
    Multi-label targets (`cxrlab.datamodules.targets.label_targets`) come as [L] float tensors instead.
    With a decode cache, images come from it already cropped and resized (8-bit), so `transform`
    must not crop again; its resize to the same size is a no-op.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        classes: list[str],
        transform: Any,
        decoding: Decoding = DEFAULT_DECODING,
        cache: DecodeCache | None = None,
        targets: np.ndarray | None = None,
    ) -> None:
        self.paths = table["path"].tolist()
        self.targets = class_targets(table, classes) if targets is None else targets
        self.transform = transform
        self.decoding, self.cache = decoding, cache

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        if self.cache is not None:
            x = torch.from_numpy(self.cache.get(self.paths[i])).float().div_(255)[None]
        else:
            x = torch.from_numpy(read_image(self.paths[i], self.decoding))[None]
        y = self.targets[i]
        return self.transform(x), torch.from_numpy(y) if y.ndim else int(y)


def drop_skipped(table: pd.DataFrame, bad: pd.DataFrame, what: str, strict: bool) -> pd.DataFrame:
    """`table` without the images of `bad` (path, error), with one warning that starts with `what`;
    in strict mode the first of them is an error instead."""
    if strict:
        raise strict_error(bad["error"].iloc[0])
    warnings.warn(
        f"{what}, e.g. {bad['error'].iloc[0]} (all listed in the run's skipped_images.csv)", stacklevel=3
    )
    return table[~table["path"].isin(bad["path"])]


def verify_images(paths: list[str], decoding: Decoding = DEFAULT_DECODING, workers: int = 4) -> pd.DataFrame:
    """Decode every image once; return the unreadable ones (and those over the pixel limit, refused
    from their header before any thread decodes them) as a (path, error) table."""
    def check(p: str) -> str | None:
        try:
            read_image(p, decoding)
        except (ValueError, FileNotFoundError) as e:
            return str(e)
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        errors = list(pool.map(check, paths, chunksize=32))
    bad = [(p, e) for p, e in zip(paths, errors, strict=True) if e is not None]
    return pd.DataFrame(bad, columns=["path", "error"])


def _warn_leaks(table: pd.DataFrame, where: str) -> None:
    """The official split of some datasets (Kermany) puts one patient in train and test."""
    leaks = split_leaks(table)
    if len(leaks):
        first = leaks.iloc[0]
        warnings.warn(
            f"{where}: the official split puts {len(leaks)} patient(s) in more than one split "
            f"({int(leaks['images'].sum())} images; e.g. {first['patient_id']} in {first['splits']}): "
            "their images leak between splits; data.official_split: false gives patient-grouped splits",
            stacklevel=3,
        )


class CXRDataModule(L.LightningDataModule):
    """Builds the sample table once, then serves train/val/test loaders."""

    def __init__(self, data: DataConfig, seed: int) -> None:
        super().__init__()
        if data.image_size is None:
            raise ValueError(
                "data.image_size is not set; resolve the config first (the backbone's input size)"
            )
        self.data = data
        self.seed = seed
        self.image_size: int = data.image_size
        self.table: pd.DataFrame | None = None
        self.classes: list[str] = []  # the classes, or the findings of a multi-label task
        self.task = "multiclass"
        self.class_weights: list[float] | None = None  # multi-label: the per-label BCE pos_weight
        self.skipped = pd.DataFrame(columns=["path", "error"])
        self.datasets: dict[str, Dataset] = {}
        self.decoding = Decoding.from_data(data)
        self.cache = (
            DecodeCache(data.cache, self.image_size, data.crop_margin, self.decoding) if data.cache else None
        )

    @property
    def where(self) -> str:
        """data.root as text, for messages."""
        return str(self.data.root)

    def prepare_table(self) -> pd.DataFrame:
        """Load, check, verify, balance and split the sample table (idempotent)."""
        if self.table is not None:
            return self.table
        data, where = self.data, self.where
        loaded = load_source(data)
        self.task = resolve_task(loaded.table, data, where)
        if self.multilabel:
            if data.balance != "none":
                raise ValueError(
                    f"data.balance={data.balance} balances one label per image; for data.task: multilabel use "
                    "data.class_weights: true (a BCE pos_weight per finding)"
                )
            table = loaded.table
            self.classes = resolve_labels(table, data.labels, where)
        else:
            table = select_labels(loaded.table, data.label_map, data.classes, data.other_labels)
            self.classes = resolve_classes(table, data.classes, where)
        self.skipped = loaded.skipped
        if data.verify_images or self.cache is not None:
            small = pd.DataFrame(small_images(table["path"].tolist(), data.min_image_size), columns=SKIPPED_COLUMNS)
            rest = table.loc[~table["path"].isin(small["path"]), "path"].tolist()
            bad = pd.concat([small, self._check_images(rest)], ignore_index=True)
            if len(bad):
                table = drop_skipped(table, bad, f"{where}: skipped {len(bad)} unreadable or too small image(s)", data.strict)
                if not self.multilabel:
                    resolve_classes(table, self.classes, f"{where} (after skipping unreadable images)")
            self.skipped = pd.concat([self.skipped, bad], ignore_index=True)
        if data.balance == "downsample":
            table = downsample(table, self.seed)
        table = table.reset_index(drop=True)
        if "split" not in table.columns:
            holdout = multilabel_holdout_split if self.multilabel else holdout_split
            if data.official_split:
                table["split"] = official_split(table, data.split, self.seed, where, holdout)
                _warn_leaks(table, where)
            elif data.folds is not None:
                kfold = multilabel_kfold_split if self.multilabel else kfold_split
                table["split"] = kfold(table, data.folds, data.fold, self.seed)
            else:
                table["split"] = holdout(table, data.split, self.seed)
        train = table[table["split"] == "train"]
        if self.multilabel:
            self._check_label_splits(table)
            weights = pos_weights(self.targets(train))
        else:
            self._check_splits(table)
            weights = class_weights(train["label"], self.classes)
        self.class_weights = weights if data.class_weights else None
        self.table = table
        return table

    @property
    def multilabel(self) -> bool:
        """Whether each image carries any number of findings (sigmoid outputs) instead of one class."""
        return self.task == "multilabel"

    def targets(self, rows: pd.DataFrame) -> np.ndarray:
        """The training targets of some rows: class indices, or [N, L] findings (NaN masked)."""
        return label_targets(rows, self.classes, self.data) if self.multilabel else class_targets(rows, self.classes)

    def _check_label_splits(self, table: pd.DataFrame) -> None:
        """Warn, per split, about findings without a positive image: the model cannot learn them from
        train, and val cannot score them (they drop out of the macro averages)."""
        for split in ("train", "val"):
            targets = self.targets(table[table["split"] == split])
            absent = [c for c, n in zip(self.classes, (targets == 1).sum(axis=0), strict=True) if n == 0]
            if absent:
                warnings.warn(
                    f"{self.where}: the {split} split has no positive image of {absent}; add data, drop them "
                    "from data.labels, or change data.split / data.seed",
                    stacklevel=3,
                )

    def _check_images(self, paths: list[str]) -> pd.DataFrame:
        """Unreadable images as (path, error); with a cache, building it is the check (images
        cached earlier decoded then, unchanged files need no second look)."""
        if self.cache is not None:
            return self.cache.build(paths)
        return verify_images(paths, self.decoding)

    def _check_splits(self, table: pd.DataFrame) -> None:
        """Every class must reach train and val; a split that exists must not miss a class."""
        for split in ("train", "val", "test"):
            part = table[table["split"] == split]
            if split == "test" and part.empty:
                continue
            missing = [c for c in self.classes if c not in set(part["label"])]
            if missing:
                counts = table.groupby("label")["patient_id"].nunique().to_dict()
                raise ValueError(
                    f"{self.where}: the {split} split has no images of {missing} (patients per class: "
                    f"{counts}); add data, or change data.split / data.folds / data.seed"
                )

    def split_table(self, split: str) -> pd.DataFrame:
        """Rows of one split (train | val | test | all)."""
        table = self.prepare_table()
        return table if split == "all" else table[table["split"] == split]

    def setup(self, stage: str | None = None) -> None:
        self.prepare_table()
        train = self._dataset(self.split_table("train"), augmented=True)
        if self.data.balance in TRAIN_BALANCE:
            labels = self.split_table("train")["label"].reset_index(drop=True)
            train = Subset(train, oversample_index(labels, self.data.balance, self.seed).tolist())
        self.datasets = {
            "train": train,
            "val": self._dataset(self.split_table("val")),
            "test": self._dataset(self.split_table("test")),
        }

    def _dataset(self, rows: pd.DataFrame, augmented: bool = False) -> CXRDataset:
        """Rows as a dataset, with the training augmentation or the evaluation transform."""
        # The cache stores images already cropped and resized: no second crop.
        margin = 0.0 if self.cache is not None else self.data.crop_margin
        transform = (
            train_transform(self.image_size, margin, self.data.augment) if augmented
            else eval_transform(self.image_size, margin)
        )
        return CXRDataset(rows, self.classes, transform, self.decoding, self.cache, self.targets(rows))

    def plain_loader(self, split: str, limit: int) -> DataLoader:
        """A split as evaluation sees it (no augmentation, no balancing), at most `limit` of its
        images drawn with the run's seed, in this process alone (no distributed sampler)."""
        rows = self.split_table(split)
        if len(rows) > limit:
            rows = rows.sample(n=limit, random_state=self.seed)
        workers = self.data.num_workers
        return DataLoader(
            self._dataset(rows), batch_size=self.data.batch_size, num_workers=workers,
            multiprocessing_context=None if workers == 0 or self.data.start_method == "auto" else self.data.start_method,
            worker_init_fn=partial(start_worker, rank=0, parent=os.getpid()) if workers else None,
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds, data = self.datasets[split], self.data
        workers = data.num_workers
        sampler = None
        trainer = self.trainer
        if not shuffle and trainer is not None and trainer.world_size > 1:
            # Lightning's default DistributedSampler pads with repeated images so ranks get equal
            # shares; evaluation metrics must count every image exactly once.
            sampler = UnrepeatedDistributedSampler(ds, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False)
        return DataLoader(
            ds,
            batch_size=data.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            # A last batch of one breaks BatchNorm on 1x1 feature maps; drop it when training.
            drop_last=shuffle and len(ds) > data.batch_size,
            num_workers=workers,
            pin_memory=data.pin_memory and torch.cuda.is_available(),
            persistent_workers=data.persistent_workers and workers > 0,
            multiprocessing_context=None if workers == 0 or data.start_method == "auto" else data.start_method,
            worker_init_fn=partial(start_worker, rank=trainer.global_rank if trainer else 0, parent=os.getpid())
            if workers else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
