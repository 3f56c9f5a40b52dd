"""Optimisers and learning-rate schedules: one constructor per model.optimizer and model.scheduler choice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from experiments.config import ModelConfig, Optimizer, Scheduler, TrainerConfig

Groups = list[dict[str, Any]]

OPTIMIZERS: dict[Optimizer, Callable[[Groups, ModelConfig], torch.optim.Optimizer]] = {
    "adam": lambda g, m: torch.optim.Adam(g, lr=m.lr, weight_decay=m.weight_decay),
    "adamw": lambda g, m: torch.optim.AdamW(g, lr=m.lr, weight_decay=m.weight_decay),
    "rmsprop": lambda g, m: torch.optim.RMSprop(g, lr=m.lr, weight_decay=m.weight_decay, momentum=m.momentum),
    "sgd": lambda g, m: torch.optim.SGD(g, lr=m.lr, weight_decay=m.weight_decay, momentum=m.momentum),
}


def _plateau(opt: torch.optim.Optimizer, t: TrainerConfig) -> dict[str, Any]:
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=t.mode, factor=0.1, patience=2)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": t.monitor}}


# Each returns what LightningModule.configure_optimizers hands to Lightning.
SCHEDULERS: dict[Scheduler, Callable[[torch.optim.Optimizer, TrainerConfig], Any]] = {
    "none": lambda opt, t: opt,
    "cosine": lambda opt, t: {
        "optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, t.max_epochs))
    },
    "plateau": _plateau,
}


def configure_optimisation(groups: Groups, model: ModelConfig, trainer: TrainerConfig) -> Any:
    """The optimiser over parameter `groups` and its schedule, as configure_optimizers returns them."""
    return SCHEDULERS[model.scheduler](OPTIMIZERS[model.optimizer](groups, model), trainer)
