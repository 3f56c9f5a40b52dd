"""Every closed choice of the config, defined once: the schema types its field with it, `--help`
lists its values, validation checks them, and each dispatch table is keyed by them. The choices
that grow (heatmap methods, heads, optimisers, schedules, data sources) are registries instead
(cxrlab.config.registry)."""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

Balance = Literal["none", "downsample", "oversample", "augment_minority"]
# auto: multilabel when the source carries finding columns (NIH, CheXpert, ...), else multiclass.
Task = Literal["auto", "multiclass", "multilabel"]
# What an uncertain (-1) label becomes: CheXpert's U-Ignore (masked), U-Ones and U-Zeros.
Uncertain = Literal["ignore", "ones", "zeros"]
OtherLabels = Literal["error", "drop"]
DicomWindow = Literal["auto", "voi", "percentile"]
StartMethod = Literal["auto", "fork", "spawn", "forkserver"]
Mode = Literal["max", "min"]
Perturb = Literal["noise", "mean", "zero"]
# model.finetune is one of these or last:N (the last N backbone blocks train).
FinetuneFixed = Literal["frozen", "full", "scratch"]
LAST_N = "last:N"
_LAST_N = re.compile(r"last:([1-9][0-9]*)")


def options(choice: Any) -> tuple[str, ...]:
    """The values of a choice (a Literal), in declaration order."""
    return get_args(choice)


def finetune_options() -> tuple[str, ...]:
    """What model.finetune accepts, as shown to a user."""
    return (*options(FinetuneFixed), LAST_N)


def last_n(policy: str) -> int | None:
    """N of a `last:N` fine-tune policy; None for the fixed policies and anything else."""
    match = _LAST_N.fullmatch(policy)
    return int(match.group(1)) if match else None


def is_finetune(policy: str) -> bool:
    """Whether `policy` is a valid model.finetune value."""
    return policy in options(FinetuneFixed) or last_n(policy) is not None
