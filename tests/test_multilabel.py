"""Multi-label tasks: the masked BCE per uncertain policy, the per-label scores, and reading a
multi-label source into targets and splits."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import multilabel_trees as trees
import numpy as np
import padchest_rsna_trees as pr_trees
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cxrlab.callbacks.trust.model_trust import finding_groups
from cxrlab.config import DataConfig
from cxrlab.datamodules.datamodule import CXRDataModule
from cxrlab.datamodules.inspection import finding_counts, inspect_dataset, report_text
from cxrlab.datamodules.probe import finding_pairs, load_image_set
from cxrlab.datamodules.sources import load_table
from cxrlab.datamodules.sources.findings import BOXES, finding_column
from cxrlab.datamodules.targets import label_targets, pos_weights
from cxrlab.lightning_modules.label_metrics import f1_threshold, label_scores, masked_bce

# Two images x three findings as CheXpert writes them: 1 present, 0 absent, -1 uncertain, NaN blank.
RAW = [[1.0, -1.0, math.nan], [0.0, 1.0, -1.0]]
LOGITS = [[2.0, -1.0, 0.5], [-0.5, 0.3, 1.5]]
FINDINGS = ["Edema", "Atelectasis", "Cardiomegaly"]


def _bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


@pytest.mark.parametrize(("policy", "uncertain_as"), [("ignore", None), ("ones", 1.0), ("zeros", 0.0)])
def test_masked_bce_equals_hand_computation(policy: str, uncertain_as: float | None) -> None:
    table = pd.DataFrame({finding_column(f): [r[j] for r in RAW] for j, f in enumerate(FINDINGS)})
    targets = label_targets(table, FINDINGS, DataConfig(task="multilabel", uncertain=policy))
    terms = []
    for row, zs in zip(RAW, LOGITS, strict=True):
        for y, z in zip(row, zs, strict=True):
            if math.isnan(y) or (y == -1 and uncertain_as is None):
                continue  # a blank, and an uncertain label under U-Ignore, count for nothing
            terms.append(_bce(z, uncertain_as if y == -1 else y))
    got = masked_bce(torch.tensor(LOGITS), torch.from_numpy(targets)).item()
    assert got == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_uncertain_policy_per_label() -> None:
    table = pd.DataFrame({finding_column(f): [r[j] for r in RAW] for j, f in enumerate(FINDINGS)})
    data = DataConfig(task="multilabel", uncertain="zeros", uncertain_by_label={"Atelectasis": "ones"})
    targets = label_targets(table, FINDINGS, data)
    assert targets[0, 1] == 1.0  # Atelectasis: U-Ones
    assert targets[1, 2] == 0.0  # Cardiomegaly: the default, U-Zeros
    assert math.isnan(targets[0, 2])  # a blank stays masked under every policy


def test_pos_weight_counts_known_values_only() -> None:
    targets = np.array([[1, 0], [0, math.nan], [0, 1], [0, 1]], dtype=np.float32)
    assert pos_weights(targets) == [3.0, 0.5]


def test_label_scores_agree_with_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((200, 3)) < [0.2, 0.5, 0.7]).astype(np.float32)
    p = np.clip(0.6 * y + 0.5 * rng.random((200, 3)), 0, 1)
    y[rng.random((200, 3)) < 0.1] = np.nan  # blanks are left out of their label's scores
    scores = label_scores(p, y, FINDINGS)
    for j, name in enumerate(FINDINGS):
        known = ~np.isnan(y[:, j])
        assert scores[f"auroc/{name}"] == pytest.approx(roc_auc_score(y[known, j], p[known, j]))
        assert scores[f"auprc/{name}"] == pytest.approx(average_precision_score(y[known, j], p[known, j]))
        assert scores[f"f1/{name}"] == pytest.approx(f1_score(y[known, j], p[known, j] >= 0.5))
    assert scores["macro_auroc"] == pytest.approx(np.mean([scores[f"auroc/{n}"] for n in FINDINGS]))
    known = ~np.isnan(y)
    assert scores["micro_auroc"] == pytest.approx(roc_auc_score(y[known], p[known]))


def test_a_label_with_one_value_is_left_out_of_the_macro_mean() -> None:
    y = np.array([[1, 0], [0, 0], [1, 0]], dtype=np.float32)
    scores = label_scores(np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.2]]), y, ["a", "b"])
    assert "auroc/b" not in scores and scores["macro_auroc"] == 1.0


def test_chexpert_tree_reads_into_grouped_splits_and_masked_targets(tmp_path: Path) -> None:
    root = trees.write_chexpert(tmp_path)
    data = DataConfig(source="chexpert", root=str(root), image_size=32, min_image_size=16, split=[0.6, 0.2, 0.2],
                      uncertain="ones")
    dm = CXRDataModule(data, seed=0)
    with pytest.warns(UserWarning):  # findings without a positive image are left out, said once
        table = dm.prepare_table()
    assert dm.multilabel and dm.classes and set(dm.classes) <= set(trees.CHEXPERT_FINDINGS)
    assert table.groupby("patient_id")["split"].nunique().max() == 1  # no patient crosses a split
    targets = dm.targets(table)
    raw = table[[finding_column(c) for c in dm.classes]].to_numpy()
    assert np.array_equal(np.isnan(targets), np.isnan(raw))  # blanks stay masked
    assert (targets[raw == -1] == 1).all()  # U-Ones
    x, y = dm._dataset(table.iloc[:2])[0]
    assert y.dtype == torch.float32 and y.shape == (len(dm.classes),)


def test_multilabel_task_on_a_single_label_source_is_one_line(folder_tree: Path) -> None:
    dm = CXRDataModule(DataConfig(root=str(folder_tree), task="multilabel", image_size=32, min_image_size=16), seed=0)
    with pytest.raises(ValueError, match="data.task=multilabel but this source has one label per image"):
        dm.prepare_table()


def test_balance_other_than_class_weights_is_refused_for_multilabel(tmp_path: Path) -> None:
    root = trees.write_nih(tmp_path)
    dm = CXRDataModule(DataConfig(source="nih", root=str(root), balance="oversample", image_size=32,
                                  min_image_size=16), seed=0)
    with pytest.raises(ValueError, match="data.class_weights: true"):
        dm.prepare_table()


def test_nih_boxes_become_lesion_masks_at_the_input_size(tmp_path: Path) -> None:
    root = trees.write_nih(tmp_path)
    table = load_table("nih", root)
    boxed = table[table[BOXES].notna()].reset_index(drop=True)
    images = load_image_set(boxed, ["Cardiomegaly"], size=32)
    assert images.lesion_masks is not None and images.lesion_masks.shape == (len(boxed), 32, 32)
    first = boxed.index[boxed["path"].str.endswith("00000001_000.png")][0]
    x, y, w, h = trees.NIH_BOXES[0][2:]  # on a 64 px image drawn at 32 px: every coordinate halves
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[round(y) // 2 : round(y + h) // 2, round(x) // 2 : round(x + w) // 2] = True
    assert (images.lesion_masks[first] ^ expected).float().mean() < 0.03  # nearest resampling at the edges
    assert images.lesion_masks.flatten(1).any(1).all()  # every boxed image has its lesion


def test_an_image_finding_pair_is_scored_against_that_findings_boxes(tmp_path: Path) -> None:
    """00000005_002.png has an Atelectasis and an Infiltrate box: each finding's pair gets its own box,
    the image's summary row both."""
    table = load_table("nih", trees.write_nih(tmp_path))
    row = table[table["path"].str.endswith("00000005_002.png")]
    pairs = finding_pairs(row, ["Atelectasis", "Infiltration"], per_label=None)
    masks = load_image_set(pd.concat([pairs, row]), ["Atelectasis", "Infiltration"], size=64).lesion_masks
    assert masks is not None
    (_, _, *atelectasis), (_, _, *infiltrate) = trees.NIH_BOXES[1], trees.NIH_BOXES[2]
    for mask, (x, y, w, h) in zip(masks[:2], (atelectasis, infiltrate), strict=True):
        expected = torch.zeros(64, 64, dtype=torch.bool)
        expected[round(y) : round(y + h), round(x) : round(x + w)] = True
        assert torch.equal(mask, expected)
    assert torch.equal(masks[2], masks[0] | masks[1])


# source -> (tree writer, its expected positives per finding, counted from the tree's own definitions)
TREES = {
    "nih": (trees.write_nih, trees.NIH_POSITIVES),
    "chexpert": (trees.write_chexpert, trees.CHEXPERT_POSITIVES),
    "mimic_cxr_jpg": (trees.write_mimic, trees.MIMIC_POSITIVES),
    "padchest": (pr_trees.write_padchest, pr_trees.PADCHEST_EXPECTED),
    "rsna_pneumonia": (pr_trees.write_rsna, pr_trees.RSNA_EXPECTED),
}


@pytest.mark.parametrize("source", list(TREES))
def test_each_tree_splits_by_patient_and_inspects_per_finding(source: str, tmp_path: Path) -> None:
    write, positives = TREES[source]
    root = write(tmp_path)
    dm = CXRDataModule(DataConfig(source=source, root=str(root), image_size=32, split=[0.6, 0.2, 0.2]), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the trees' skipped rows and findings absent from a small split
        table = dm.prepare_table()
        ins = inspect_dataset(DataConfig(source=source, root=str(root)), workers=1, progress=False)
    assert dm.multilabel and table.groupby("patient_id")["split"].nunique().max() == 1
    counts = finding_counts(ins.images)
    assert {f: n for f, n in counts["present"].items() if n} == {f: n for f, n in positives.items() if n}
    assert (counts["uncertain share"] <= 1).all() and "findings" in report_text(ins)


def test_f1_threshold_is_the_best_cut_scikit_learn_finds() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.random(60) < 0.3
        s = np.round(0.5 * rng.random(60) + 0.4 * y, 2)
        best = max(f1_score(y, s >= c) for c in np.unique(s))
        assert f1_score(y, s >= f1_threshold(s, y)) == pytest.approx(best)


def test_every_positive_finding_and_every_normal_film_is_a_trust_group() -> None:
    """A film with two findings feeds both findings' means, one without any the normal mean (K);
    an uncertain (NaN) or negative finding feeds none."""
    targets = torch.tensor([[1.0, 0.0, math.nan], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [math.nan, 0.0, 1.0]])
    rows, groups = finding_groups(targets)
    assert sorted(zip(rows.tolist(), groups.tolist(), strict=True)) == [(0, 0), (1, 3), (2, 0), (2, 1), (3, 2)]
