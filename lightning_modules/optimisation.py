"""Optimisers and learning-rate schedules: one registered constructor per model.optimizer and model.scheduler."""

from __future__ import annotations

from typing import Any

import torch

from cxrlab.config import OPTIMIZERS, SCHEDULERS, ModelConfig, TrainerConfig

Groups = list[dict[str, Any]]


@OPTIMIZERS.register("adam")
def adam(groups: Groups, m: ModelConfig) -> torch.optim.Optimizer:
    """Adam."""
    return torch.optim.Adam(groups, lr=m.lr, weight_decay=m.weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(groups: Groups, m: ModelConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay)."""
    return torch.optim.AdamW(groups, lr=m.lr, weight_decay=m.weight_decay)


@OPTIMIZERS.register("rmsprop")
def rmsprop(groups: Groups, m: ModelConfig) -> torch.optim.Optimizer:
    """RMSprop with model.momentum."""
    return torch.optim.RMSprop(groups, lr=m.lr, weight_decay=m.weight_decay, momentum=m.momentum)


@OPTIMIZERS.register("sgd")
def sgd(groups: Groups, m: ModelConfig) -> torch.optim.Optimizer:
    """SGD with model.momentum."""
    return torch.optim.SGD(groups, lr=m.lr, weight_decay=m.weight_decay, momentum=m.momentum)


# Each schedule returns what LightningModule.configure_optimizers hands to Lightning.
@SCHEDULERS.register("none")
def constant(opt: torch.optim.Optimizer, t: TrainerConfig) -> Any:
    """No schedule: the learning rate stays."""
    return opt


@SCHEDULERS.register("cosine")
def cosine(opt: torch.optim.Optimizer, t: TrainerConfig) -> Any:
    """Cosine annealing over trainer.max_epochs."""
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, t.max_epochs))}


@SCHEDULERS.register("plateau")
def plateau(opt: torch.optim.Optimizer, t: TrainerConfig) -> Any:
    """x0.1 when trainer.monitor stalls for 2 epochs."""
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=t.mode, factor=0.1, patience=2)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": t.monitor}}


def configure_optimisation(groups: Groups, model: ModelConfig, trainer: TrainerConfig) -> Any:
    """The optimiser over parameter `groups` and its schedule, as configure_optimizers returns them."""
    return SCHEDULERS.get(model.scheduler)(OPTIMIZERS.get(model.optimizer)(groups, model), trainer)
