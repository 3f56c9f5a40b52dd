"""Each choice is defined once: a closed choice is a Literal in config/choices.py, a choice that grows is a
registry (config/registry.py) filled by decorators where each value is implemented. Every dispatch
table is keyed by exactly its values, --help lists them, validation refuses anything else, and each
value builds and runs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from cxrlab.callbacks.explanations.aopc import PERTURBATIONS
from cxrlab.callbacks.explanations.methods import heatmaps
from cxrlab.config import (
    HEADS,
    METHODS,
    OPTIMIZERS,
    SCHEDULERS,
    Balance,
    ConfigError,
    ExplainConfig,
    FinetuneFixed,
    ModelConfig,
    OcclusionConfig,
    Perturb,
    iter_fields,
    load_config,
    options,
)
from cxrlab.datamodules.splits import TRAIN_BALANCE
from cxrlab.experiments.cli.main import build_parser
from cxrlab.lightning_modules.finetune import WHOLE_BACKBONE
from cxrlab.lightning_modules.heads import build_head
from cxrlab.lightning_modules.optimisation import configure_optimisation

LITERAL_TABLES = {
    "model.finetune": (WHOLE_BACKBONE, FinetuneFixed),
    "explain.aopc.perturb": (PERTURBATIONS, Perturb),
}
REGISTRIES = {"model.head": HEADS, "model.optimizer": OPTIMIZERS, "model.scheduler": SCHEDULERS, "explain.methods": METHODS}
HELP = {key: text for key, _, _, text in iter_fields()}


def _train_help() -> str:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return " ".join(sub.choices["train"].format_help().split())


@pytest.mark.parametrize("key", list(LITERAL_TABLES))
def test_dispatch_table_keys_are_the_choice(key: str) -> None:
    table, choice = LITERAL_TABLES[key]
    assert set(table) == set(options(choice))
    assert all(value in HELP[key] for value in options(choice))  # --help lists every value


@pytest.mark.parametrize("key", list(REGISTRIES))
def test_registries_are_what_help_lists(key: str) -> None:
    registry = REGISTRIES[key]
    assert registry.key == key and len(registry.names()) >= 3
    assert f"--{key} " in _train_help() and f"one of {', '.join(registry.names())})" in _train_help()


def test_every_choice_field_refuses_other_values() -> None:
    """Every field typed by a choice says which values it takes, with the closest one."""
    fields = [(key, tp) for key, tp, _, text in iter_fields() if "one of " in text] + [(key, None) for key in REGISTRIES]
    assert {"data.balance", "data.other_labels", "data.dicom_window", "data.start_method", "trainer.mode"} | set(
        LITERAL_TABLES
    ) <= {key for key, _ in fields}
    for key, _ in fields:
        good = REGISTRIES[key].names()[0] if key in REGISTRIES else HELP[key].rsplit("one of ", 1)[1].rstrip(")").split(", ")[0]
        with pytest.raises(ConfigError, match=rf"{good}.*did you mean '{good}'"):
            load_config(overrides={key: good + "x"})


def test_train_balancing_is_keyed_by_balance_values() -> None:
    # none and downsample act before the train split exists, so only the rest are table keys.
    assert set(TRAIN_BALANCE) == set(options(Balance)) - {"none", "downsample"}


@pytest.mark.parametrize("head", HEADS.names())
def test_every_head_builds_and_runs(head: str) -> None:
    out = build_head(ModelConfig(head=head, hidden=4, pool=2), 8, 3, feature_hw=(4, 4))(torch.rand(2, 8, 4, 4))
    assert out.shape == (2, 3)


@pytest.mark.parametrize("scheduler", SCHEDULERS.names())
@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
def test_every_optimiser_and_schedule_steps(optimizer: str, scheduler: str) -> None:
    cfg = load_config(overrides={"model.optimizer": optimizer, "model.scheduler": scheduler, "model.lr": 0.1})
    weight = nn.Parameter(torch.ones(3))
    out: Any = configure_optimisation([{"params": [weight], "lr": 0.1}], cfg.model, cfg.trainer)
    opt = out if isinstance(out, torch.optim.Optimizer) else out["optimizer"]
    assert isinstance(opt, torch.optim.Optimizer) and (scheduler == "none") == (opt is out)
    weight.sum().backward()
    opt.step()
    assert (weight < 1).all()  # one step of every optimiser moves the weights downhill


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_explains(method: str) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    settings = ExplainConfig(occlusion=OcclusionConfig(window=4, stride=2))  # occlusion's default window exceeds 8 px
    maps = heatmaps(model, model[1], torch.rand(3, 1, 8, 8), method, settings=settings)
    assert maps.shape[0] == 3 and maps.shape[2:] == (8, 8) and torch.isfinite(maps).all()
    assert maps.shape[1] == (2 if METHODS.get(method).per_class else 1)


def test_unknown_method_suggests() -> None:
    with pytest.raises(ValueError, match=r"explain.methods has 'gradcamp'.*did you mean 'gradcampp'"):
        heatmaps(nn.Identity(), "", torch.rand(1, 1, 4, 4), "gradcamp")


def test_a_name_registers_once() -> None:
    with pytest.raises(ValueError, match="model.head: 'gap-mlp' is registered twice"):
        HEADS.register("gap-mlp")(lambda *a: None)
