"""The shortcut alarm: flag images whose heatmaps sit outside the anatomy, and judge the model by
the share of flagged images."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from cxrlab.config import AlarmConfig

# focus score -> (the AlarmConfig threshold that bounds it, whether it must stay above it)
CRITERIA: dict[str, tuple[str, bool]] = {
    "lung_focus": ("min_lung_focus", True),
    "border_focus": ("max_border_focus", False),
    "corner_focus": ("max_corner_focus", False),
    "outside_body_focus": ("max_outside_body_focus", False),
}
TAG = "cxrlab.shortcut_alarm"  # MLflow run tag: yes | no


@dataclass
class ShortcutVerdict:
    """Per-image severities and flags, and the model-level verdict."""

    severity: Tensor  # [N] worst threshold ratio over the criteria; > 1 means flagged, NaN undefined
    reason: list[str]  # [N] the criterion behind each severity ('' where undefined)
    n_judged: int  # images with at least one defined focus score
    n_flagged: int
    max_share: float

    @property
    def share(self) -> float:
        """Share of judged images that are flagged (NaN when none could be judged)."""
        return self.n_flagged / self.n_judged if self.n_judged else math.nan

    @property
    def alarm(self) -> bool:
        """Whether the model looks like it reads a shortcut."""
        return self.n_judged > 0 and self.share > self.max_share

    def sentence(self) -> str:
        """The verdict in one line, as a report opens with it."""
        if not self.n_judged:
            return "Shortcut check: no image had a defined focus score (empty heatmaps); no verdict."
        head = "SHORTCUT ALARM" if self.alarm else "No shortcut alarm"
        return (
            f"{head}: {self.n_flagged} of {self.n_judged} explained images ({self.share:.0%}) have "
            f"heatmaps concentrated outside the lungs, in the border, the corners or outside the body "
            f"(the alarm fires above {self.max_share:.0%})."
        )


def shortcut_verdict(focus: dict[str, Tensor], alarm: AlarmConfig) -> ShortcutVerdict:
    """Judge focus scores ({name: [N]}, NaN where undefined) against the alarm's thresholds."""
    ratios, names = [], []
    for name, (key, at_least) in CRITERIA.items():
        if name not in focus:
            continue
        value, bound = focus[name].double(), getattr(alarm, key)
        # Ratio > 1 breaks the bound: value/bound for an upper bound, bound/value for a lower one.
        ratio = bound / value if at_least else value / bound
        ratios.append(torch.where(value.isnan(), -math.inf, ratio.nan_to_num(posinf=math.inf)))
        names.append(name)
    if not ratios:
        raise ValueError("shortcut_verdict: no focus score to judge; need one of " + ", ".join(CRITERIA))
    stacked = torch.stack(ratios)
    worst, which = stacked.max(0)
    defined = worst > -math.inf
    severity = torch.where(defined, worst, math.nan)
    reason = [names[int(w)] if d else "" for w, d in zip(which, defined, strict=True)]
    return ShortcutVerdict(
        severity.float(), reason, int(defined.sum()), int((severity > 1).sum()), alarm.max_share
    )
