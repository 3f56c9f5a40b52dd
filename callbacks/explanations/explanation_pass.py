"""The one explanation pass over an image set, shared by the epoch-end ExplainCallback, `cxrlab explain`
and `cxrlab evaluate`: sample -> decode -> explain -> metrics, artifacts and the shortcut verdict. An
epoch-end heatmap and an evaluate heatmap are the same code."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
from torch import nn

from cxrlab.callbacks.explanations.aopc import check_grid
from cxrlab.callbacks.explanations.explanation import ExplanationSet, explain_images
from cxrlab.callbacks.explanations.records import explanation_artifacts, explanation_metrics
from cxrlab.callbacks.explanations.shortcut import TAG
from cxrlab.config import DataConfig, ExplainConfig
from cxrlab.datamodules.images import Decoding
from cxrlab.datamodules.probe import ImageSet, finding_pairs, load_image_set, stratified_sample
from cxrlab.lightning_modules.probabilities import is_multilabel


def sample_images(model: nn.Module, table: pd.DataFrame, per_class: int | None, seed: int, data: DataConfig) -> ImageSet:
    """Up to `per_class` images of every label of `table` (all when None) - multi-label, of every
    finding, once per finding it has - decoded, cropped and resized as the model's data section says."""
    rows = (
        finding_pairs(table, model.classes, per_class, seed) if is_multilabel(model)
        else stratified_sample(table, per_class, seed)
    )
    return load_image_set(rows, model.classes, model.input_size, data.crop_margin, Decoding.from_data(data))


@dataclass
class ExplainedImages:
    """One pass: the images, their explanations, the explain/* metrics and the seconds it took."""

    images: ImageSet
    explanation: ExplanationSet
    metrics: dict[str, float]
    seconds: float

    @property
    def alarm_tags(self) -> dict[str, str]:
        """The run tag holding the shortcut verdict; none when the alarm judged no image."""
        verdict = self.explanation.verdict
        if verdict is None or not verdict.n_judged:
            return {}
        return {TAG: "yes" if verdict.alarm else "no"}

    def artifacts(self) -> dict[str, Any]:
        """Every figure, table and array of the pass, and which images it explained (images.csv)."""
        return explanation_artifacts(self.explanation) | {"images.csv": self.images.table[["path", "label", "split"]]}


def explain_image_set(
    model: nn.Module, images: ImageSet, settings: ExplainConfig, seed: int = 0, focus_only: bool = False
) -> ExplainedImages:
    """Explain `images` with the model's classes as `settings` say; `focus_only` is the shortcut
    check alone (no eigen-heatmaps, no AOPC)."""
    if not focus_only:
        check_grid(model.input_size, model.input_size, settings.aopc.region, settings.aopc.steps)
    start = time.perf_counter()
    es = explain_images(
        model, images.images, images.labels, model.classes, settings,
        lung_masks=images.lung_masks, lesion_masks=images.lesion_masks, seed=seed, focus_only=focus_only,
    )
    return ExplainedImages(images, es, explanation_metrics(es), time.perf_counter() - start)
