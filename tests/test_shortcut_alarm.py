"""The shortcut alarm through the real explanation pass, with hand-built models: one whose logits
read a corner patch (a burnt-in marker) and one whose logits read a patch in the lungs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cxrlab.callbacks.explanations.explanation import explain_images
from cxrlab.callbacks.explanations.records import explanation_metrics, focus_table
from cxrlab.callbacks.explanations.shortcut import shortcut_verdict
from cxrlab.config import AlarmConfig, AOPCConfig, ExplainConfig
from cxrlab.datamodules.phantom import PHANTOM_CLASSES, render_phantom

SIZE = 64
CLASSES = ["normal", "covid"]


class PatchReader(nn.Module):
    """Logit c = mean brightness of patch c. The `features` layer (the Grad-CAM target) holds one
    channel per class: the image inside that class's patch, zero elsewhere."""

    def __init__(self, patches: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("patches", patches.float())  # [C, H, W]
        self.features = nn.Identity()
        self.scale = nn.Parameter(torch.tensor(10.0))  # the pass reads the device from a parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x * self.patches)  # [N, C, H, W]
        return self.scale * f.sum((2, 3)) / self.patches.sum((1, 2))


def _patches(rows: tuple[slice, slice], cols: tuple[slice, slice]) -> torch.Tensor:
    p = torch.zeros(2, SIZE, SIZE)
    for c in range(2):
        p[c, rows[c], cols[c]] = 1
    return p


# Corner model: patches of 6x6 px in the top-left and bottom-right corners (where markers sit).
CORNERS = _patches((slice(1, 7), slice(57, 63)), (slice(1, 7), slice(57, 63)))
# Lung model: 8x8 px patches in the middle of the right and left lung fields.
LUNGS = _patches((slice(24, 32), slice(24, 32)), (slice(16, 24), slice(40, 48)))


@pytest.fixture(scope="module")
def phantoms() -> dict[str, torch.Tensor]:
    """Phantom radiographs with lung masks; every second one carries a class corner marker."""
    images, lungs, labels = [], [], []
    for i in range(12):
        label = i % 2
        marker = (0, 3)[label] if i % 4 < 2 else None  # normal: top-left, covid: bottom-right
        view = render_phantom(np.random.default_rng([7, i]), CLASSES[label], SIZE, 0.3, marker)
        images.append(torch.from_numpy(view.image).float()[None] / 255)
        lungs.append(torch.from_numpy(view.lung))
        labels.append(label)
    assert PHANTOM_CLASSES.index("covid") == 3  # covid's marker corner is the bottom-right one
    return {"images": torch.stack(images), "lungs": torch.stack(lungs), "labels": torch.tensor(labels)}


def _explain(patches: torch.Tensor, phantoms: dict[str, torch.Tensor]):
    settings = ExplainConfig(eigen=False, aopc=AOPCConfig(region=16, steps=4))
    torch.manual_seed(0)
    return explain_images(
        PatchReader(patches), phantoms["images"], phantoms["labels"], CLASSES, settings,
        layer="features", lung_masks=phantoms["lungs"],
    )


def test_alarm_fires_for_a_corner_reader(phantoms: dict[str, torch.Tensor]) -> None:
    es = _explain(CORNERS, phantoms)
    assert es.verdict is not None and es.verdict.alarm and es.verdict.share == 1.0
    metrics = explanation_metrics(es)
    assert metrics["explain/shortcut_alarm"] == 1.0
    assert metrics["explain/corner_focus"] > 5 and metrics["explain/border_focus"] > 2
    assert metrics["explain/lung_focus"] == 0.0 and metrics["explain/outside_body_focus"] > 2
    table = focus_table(es)
    assert table["shortcut_flagged"].all()  # zero lung focus is the worst break: infinitely far


def test_no_alarm_for_a_lung_reader(phantoms: dict[str, torch.Tensor]) -> None:
    es = _explain(LUNGS, phantoms)
    assert es.verdict is not None and not es.verdict.alarm and es.verdict.n_flagged == 0
    metrics = explanation_metrics(es)
    assert metrics["explain/shortcut_alarm"] == 0.0
    assert metrics["explain/lung_focus"] > 2
    for name in ("border_focus", "corner_focus", "outside_body_focus"):
        assert metrics[f"explain/{name}"] == 0.0


def test_verdict_by_hand() -> None:
    alarm = AlarmConfig(min_lung_focus=1.0, max_border_focus=2.0, max_corner_focus=4.0,
                        max_outside_body_focus=2.0, max_share=0.4)
    focus = {
        "lung_focus": torch.tensor([2.0, 0.5, math.nan, 1.5, math.nan]),
        "border_focus": torch.tensor([1.0, 1.0, 3.0, 1.0, math.nan]),
        "corner_focus": torch.tensor([1.0, 1.0, 1.0, 6.0, math.nan]),
    }
    v = shortcut_verdict(focus, alarm)
    # Image 0 passes; 1 breaks lung (2x), 2 border (1.5x), 3 corners (1.5x); 4 has no scores.
    torch.testing.assert_close(v.severity[:4], torch.tensor([0.5, 2.0, 1.5, 1.5]))
    assert math.isnan(v.severity[4]) and v.reason == ["lung_focus", "lung_focus", "border_focus", "corner_focus", ""]
    assert (v.n_judged, v.n_flagged, v.share, v.alarm) == (4, 3, 0.75, True)
    assert not shortcut_verdict(focus, AlarmConfig(max_share=0.8)).alarm
