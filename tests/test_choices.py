"""Each choice is defined once (a Literal in experiments/config/choices.py): every dispatch table is
keyed by exactly its values, --help lists them, validation refuses anything else, and each value
builds and runs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from callbacks.explanations.aopc import PERTURBATIONS
from callbacks.explanations.explanation import METHODS, heatmaps
from datamodules.splits import TRAIN_BALANCE
from experiments.config import (
    Balance,
    ConfigError,
    FinetuneFixed,
    Head,
    Method,
    Optimizer,
    Perturb,
    Scheduler,
    iter_fields,
    load_config,
    options,
)
from lightning_modules.finetune import WHOLE_BACKBONE
from lightning_modules.heads import HEADS, build_head
from lightning_modules.optimisation import OPTIMIZERS, SCHEDULERS, configure_optimisation

TABLES = {
    "model.head": (HEADS, Head),
    "model.optimizer": (OPTIMIZERS, Optimizer),
    "model.scheduler": (SCHEDULERS, Scheduler),
    "model.finetune": (WHOLE_BACKBONE, FinetuneFixed),
    "explain.methods": (METHODS, Method),
    "explain.aopc.perturb": (PERTURBATIONS, Perturb),
}
HELP = {key: text for key, _, _, text in iter_fields()}


@pytest.mark.parametrize("key", list(TABLES))
def test_dispatch_table_keys_are_the_choice(key: str) -> None:
    table, choice = TABLES[key]
    assert set(table) == set(options(choice))
    assert all(value in HELP[key] for value in options(choice))  # --help lists every value


def test_every_choice_field_refuses_other_values() -> None:
    """Every field typed by a choice says which values it takes, with the closest one."""
    fields = [(key, tp) for key, tp, _, text in iter_fields() if "one of " in text]
    assert {"data.balance", "data.other_labels", "data.dicom_window", "data.start_method", "trainer.mode"} | set(
        TABLES
    ) <= {key for key, _ in fields}
    for key, _ in fields:
        good = HELP[key].rsplit("one of ", 1)[1].rstrip(")").split(", ")[0]
        with pytest.raises(ConfigError, match=rf"{good}.*did you mean '{good}'"):
            load_config(overrides={key: good + "x"})


def test_train_balancing_is_keyed_by_balance_values() -> None:
    # none and downsample act before the train split exists, so only the rest are table keys.
    assert set(TRAIN_BALANCE) == set(options(Balance)) - {"none", "downsample"}


@pytest.mark.parametrize("head", options(Head))
def test_every_head_builds_and_runs(head: str) -> None:
    out = build_head(head, 8, 3, hidden=4, pool=2, feature_hw=(4, 4))(torch.rand(2, 8, 4, 4))
    assert out.shape == (2, 3)


@pytest.mark.parametrize("scheduler", options(Scheduler))
@pytest.mark.parametrize("optimizer", options(Optimizer))
def test_every_optimiser_and_schedule_steps(optimizer: str, scheduler: str) -> None:
    cfg = load_config(overrides={"model.optimizer": optimizer, "model.scheduler": scheduler, "model.lr": 0.1})
    weight = nn.Parameter(torch.ones(3))
    out: Any = configure_optimisation([{"params": [weight], "lr": 0.1}], cfg.model, cfg.trainer)
    opt = out if isinstance(out, torch.optim.Optimizer) else out["optimizer"]
    assert isinstance(opt, torch.optim.Optimizer) and (scheduler == "none") == (opt is out)
    weight.sum().backward()
    opt.step()
    assert (weight < 1).all()  # one step of every optimiser moves the weights downhill


@pytest.mark.parametrize("method", options(Method))
def test_every_method_explains(method: str) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    maps = heatmaps(model, model[1], torch.rand(3, 1, 8, 8), method)
    assert maps.shape[0] == 3 and maps.shape[2:] == (8, 8) and torch.isfinite(maps).all()


def test_unknown_method_suggests() -> None:
    with pytest.raises(ValueError, match=r"explain.methods has 'gradcamp'.*did you mean 'gradcampp'"):
        heatmaps(nn.Identity(), "", torch.rand(1, 1, 4, 4), "gradcamp")
