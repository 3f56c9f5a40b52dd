"""The `search:` block: parsing, the error messages for bad input, define-by-run suggestions."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from cxrlab.config import ConfigError, flatten, load_config, options, to_dict
from cxrlab.experiments.sweeps.search_schema import PRUNERS, SAMPLERS, PrunerName, SamplerName
from cxrlab.experiments.sweeps.search_space import (
    build_pruner,
    build_sampler,
    parse_search,
    suggest,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "configs"
SWEEPS = ("phantom_sweep", "sweep_backbones", "sweep_aopc_pair", "phantom_shortcut_sweep")
WHERE = "my_sweep.yaml"


def search(**overrides: Any) -> dict[str, Any]:
    """A valid search block with some keys replaced."""
    base = {
        "objectives": ["val/macro_f1"],
        "params": {
            "model.head": ["gap-linear", "gap-mlp", "maxpool-mlp"],
            "model.hidden": {"low": 16, "high": 256, "step": 16, "when": {"model.head": ["gap-mlp", "maxpool-mlp"]}},
            "model.lr": {"low": "1e-5", "high": 1.0e-2, "log": True},
            "model.finetune": ["scratch", "full", "last:2"],
            "model.backbone_lr_mult": {"low": 0.01, "high": 1.0, "when": {"model.finetune": ["full", "last:2"]}},
        },
    }
    return base | overrides


def params(**changes: Any) -> dict[str, Any]:
    """search() with entries of `params` replaced (None drops one)."""
    p = dict(search()["params"])
    for k, v in changes.items():
        key = k.replace("__", ".")
        if v is None:
            p.pop(key)
        else:
            p[key] = v
    return search(params=p)


def test_parse_kinds_conditions_and_defaults() -> None:
    spec = parse_search(search(), WHERE)
    by = spec.params
    assert list(spec.params) == list(search()["params"])  # YAML order = suggest order
    assert by["model.head"].kind == "categorical" and by["model.head"].values == ("gap-linear", "gap-mlp", "maxpool-mlp")
    assert (by["model.hidden"].kind, by["model.hidden"].low, by["model.hidden"].high, by["model.hidden"].step) == ("int", 16, 256, 16)
    assert by["model.lr"].kind == "float" and by["model.lr"].low == pytest.approx(1e-5) and by["model.lr"].log
    assert dict(by["model.hidden"].when) == {"model.head": ("gap-mlp", "maxpool-mlp")}
    assert spec.directions == ("maximize",) and spec.sampler.name == "tpe" and spec.pruner.name == "median"
    assert spec.pruned and not spec.multi_objective
    assert (spec.heartbeat.interval, spec.heartbeat.grace, spec.heartbeat.max_retry) == (10, 30, 3)  # launchers re-queue at once; grace is the fallback
    loss = parse_search(search(objectives=["val/loss", "explain/aopc_gap"]), WHERE)
    assert loss.directions == ("minimize", "maximize") and loss.multi_objective and not loss.pruned
    assert isinstance(build_pruner(loss), optuna.pruners.NopPruner)


def test_sampler_and_pruner_tables_are_keyed_by_their_choices() -> None:
    assert list(SAMPLERS) == list(options(SamplerName))
    assert list(PRUNERS) == list(options(PrunerName))


def test_grace_follows_the_heartbeat_interval_unless_given() -> None:
    slow = parse_search(search(heartbeat={"interval": 60}), WHERE)
    assert (slow.heartbeat.interval, slow.heartbeat.grace, slow.heartbeat.max_retry) == (60, 180, 3)
    forever = parse_search(search(heartbeat={"grace": 45, "max_retry": None}), WHERE)
    assert (forever.heartbeat.interval, forever.heartbeat.grace, forever.heartbeat.max_retry) == (10, 45, None)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("not a mapping", r"my_sweep\.yaml: 'search' must be a mapping"),
        (search(samplr="tpe"), r"unknown key 'search\.samplr' \(did you mean 'sampler'\?\); valid keys here: directions"),
        (search(params={}), r"search\.params: expected a mapping of config keys"),
        (params(model__hiden=[8, 16]), r"search\.params\.model\.hiden: 'model\.hiden' is not a config key \(did you mean 'model\.hidden'\?\)"),
        (params(model__head=["gap-linear", "gap_mlp"]), r"search\.params\.model\.head\.values\[1\]: 'gap_mlp' is not one of .* \(did you mean 'gap-mlp'\?\)"),
        (params(model__head={"low": 1, "high": 2}), r"search\.params\.model\.head: 'model\.head' is not numeric; list its choices"),
        (params(model__lr={"low": 0.1, "high": 0.01}), r"search\.params\.model\.lr: low=0\.1 must be below high=0\.01"),
        (params(model__lr={"low": 0.0, "high": 0.1, "log": True}), r"search\.params\.model\.lr: log: true needs low > 0"),
        (params(model__lr={"low": 1e-4, "high": 0.1, "log": True, "step": 0.01}), r"model\.lr: log and step exclude each other"),
        (params(model__lr={"low": "tiny", "high": 0.1}), r"search\.params\.model\.lr\.low: expected a number, got 'tiny'"),
        (params(model__lr={"high": 0.1}), r"model\.lr: a range needs both low and high"),
        (params(model__hidden={"values": [8, "many"]}), r"search\.params\.model\.hidden\.values\[1\]: expected an integer"),
        (params(model__hidden={"values": [8], "low": 1}), r"model\.hidden: 'values' excludes low"),
        (params(data__split=[[0.8, 0.2], [0.7, 0.3]]), r"search\.params\.data\.split: 'data\.split' is a list or mapping"),
        (params(model__lr={"low": 1e-4, "high": 0.1, "when": {"model.optimiser": ["sgd"]}}), r"model\.lr\.when\.model\.optimiser: 'model\.optimiser' is not a config key \(did you mean 'model\.optimizer'\?\)"),
        (search(params={"model.hidden": {"values": [8], "when": {"model.head": ["gap-mlp"]}}, "model.head": ["gap-mlp"]}), r"search\.params\.model\.hidden\.when: 'model\.head' is searched after 'model\.hidden'; list it first"),
        (search(objectives=["test/acc"]), r"search\.objectives: 'test/acc' is not a validation or explanation metric"),
        (search(objectives=["val/acc", "val/loss"], directions=["max"]), r"search\.directions: give one of maximize\|minimize per objective \(2\)"),
        (search(sampler="bayes"), r"search\.sampler\.name='bayes' is not one of tpe, random, cmaes, nsga2, grid"),
        (search(sampler={"name": "TPEE"}), r"search\.sampler\.name='tpee' is not one of .* \(did you mean 'tpe'\?\)"),
        (search(sampler={"name": "tpe", "n_startup": 3}), r"search\.sampler: sampler tpe does not take these options"),
        (search(sampler={"name": "random", "seed": 3}), r"search\.sampler: set seed elsewhere \(search\.seed"),
        (search(pruner={"name": "median", "warmup": 2}), r"search\.pruner: pruner median does not take these options"),
        (search(sampler="grid"), r"search\.params\.model\.hidden: sampler grid needs values: \[\.\.\.\] for every parameter"),
        (search(sampler="grid", params={"model.head": ["gap-mlp"], "model.hidden": {"values": [8], "when": {"model.head": ["gap-mlp"]}}}), r"model\.hidden: a grid sets every parameter at every point, so 'when'"),
        (search(n_trials=0), r"search\.n_trials=0 is out of range; it must be >= 1"),
        (search(objectives={"val/acc": 1}), r"search\.objectives: expected a list"),
        (search(directions=["up"]), r"search\.directions has 'up'; choose from maximize, minimize"),
        (search(heartbeat={"interval": 60, "grace": 30}), r"search\.heartbeat: need grace > interval \(got interval 60, grace 30\)"),
        (search(heartbeat={"interval": 0}), r"search\.heartbeat\.interval=0 is out of range; it must be >= 1"),
        (search(heartbeat={"max_retry": -1}), r"search\.heartbeat\.max_retry=-1 is out of range; it must be >= 0"),
        (search(heartbeat={"intervall": 60}), r"unknown key 'search\.heartbeat\.intervall' \(did you mean 'interval'\?\)"),
    ],
)
def test_errors_name_the_file_and_the_key(block: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_search(block, WHERE)


def test_cmaes_is_single_objective() -> None:
    block = search(sampler="cmaes")
    assert isinstance(build_sampler(parse_search(block, WHERE), 0), optuna.samplers.CmaEsSampler)
    with pytest.raises(ConfigError, match="cmaes is single-objective"):
        parse_search(search(sampler="cmaes", objectives=["val/acc", "val/loss"]), WHERE)


def test_suggest_is_define_by_run_with_conditions() -> None:
    spec = parse_search(search(sampler="random"), WHERE)
    base = flatten(to_dict(load_config()))
    study = optuna.create_study(sampler=build_sampler(spec, seed=3), direction="maximize")
    seen = []
    for _ in range(60):
        trial = study.ask()
        chosen = suggest(trial, spec, base)
        assert chosen == trial.params
        assert ("model.hidden" in chosen) == (chosen["model.head"] in ("gap-mlp", "maxpool-mlp"))
        assert ("model.backbone_lr_mult" in chosen) == (chosen["model.finetune"] in ("full", "last:2"))
        if "model.hidden" in chosen:
            assert 16 <= chosen["model.hidden"] <= 256 and chosen["model.hidden"] % 16 == 0
        assert 1e-5 <= chosen["model.lr"] <= 1e-2
        study.tell(trial, 0.0)
        seen.append(chosen)
    # Every categorical value and both branches of each condition were drawn.
    assert {c["model.head"] for c in seen} == {"gap-linear", "gap-mlp", "maxpool-mlp"}
    assert {c["model.finetune"] for c in seen} == {"scratch", "full", "last:2"}
    # log-uniform: about half of the draws fall below the geometric midpoint 3.2e-4.
    below = sum(c["model.lr"] < 10**-3.5 for c in seen) / len(seen)
    assert 0.3 < below < 0.7


def test_condition_on_an_unsearched_key_reads_the_base_config() -> None:
    block = search(params={"model.hidden": {"values": [8, 16], "when": {"model.head": ["gap-mlp"]}}})
    spec = parse_search(block, WHERE)
    study = optuna.create_study()
    linear = flatten(to_dict(load_config(overrides={"model.head": "gap-linear"})))
    mlp = flatten(to_dict(load_config(overrides={"model.head": "gap-mlp"})))
    assert suggest(study.ask(), spec, linear) == {}
    assert set(suggest(study.ask(), spec, mlp)) == {"model.hidden"}


def test_seeded_samplers_repeat_and_grid_covers_each_point_once() -> None:
    spec = parse_search(search(sampler="tpe"), WHERE)
    base = flatten(to_dict(load_config()))

    def draws(seed: int) -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=build_sampler(spec, seed))
        out = []
        for _ in range(5):
            t = study.ask()
            out.append(suggest(t, spec, base))
            study.tell(t, 1.0)
        return out

    assert draws(1) == draws(1) and draws(1) != draws(2)
    grid = parse_search(
        search(sampler="grid", params={"model.head": ["gap-linear", "gap-mlp"], "model.hidden": [8, 16, 32]}), WHERE
    )
    assert grid.grid_size() == 6
    study = optuna.create_study(sampler=build_sampler(grid, 0))
    points: list[tuple[Any, ...]] = []

    def objective(t: optuna.Trial) -> float:
        points.append(tuple(suggest(t, grid, base).values()))
        return 0.0

    study.optimize(objective, n_trials=2 * grid.grid_size())  # the sampler stops at the grid's end
    assert sorted(points) == sorted(itertools.product(["gap-linear", "gap-mlp"], [8, 16, 32]))


def test_pruner_options_reach_optuna() -> None:
    spec = parse_search(search(pruner={"name": "threshold", "lower": 0.5}), WHERE)
    pruner = build_pruner(spec)
    assert isinstance(pruner, optuna.pruners.ThresholdPruner) and pruner._lower == 0.5
    assert isinstance(build_pruner(parse_search(search(pruner="hyperband"), WHERE)), optuna.pruners.HyperbandPruner)
    assert isinstance(build_pruner(parse_search(search(pruner="none"), WHERE)), optuna.pruners.NopPruner)
    unnamed = parse_search(search(sampler={"n_startup_trials": 2}, pruner=None), WHERE)  # the default names
    assert (unnamed.sampler.name, unnamed.sampler.options, unnamed.pruner.name) == ("tpe", {"n_startup_trials": 2}, "median")


@pytest.mark.parametrize("name", SWEEPS)
def test_shipped_sweeps_parse(name: str) -> None:
    path = CONFIG_DIR / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    spec = parse_search(raw["search"], str(path))
    assert load_config(path, extra_sections=("search",)).tracking.experiment == raw["tracking"]["experiment"]
    if name == "sweep_backbones":
        assert spec.sampler.name == "grid" and spec.grid_size() == 5 * 2 * 2 and not spec.pruned
        assert load_config(path, extra_sections=("search",)).data.folds == 4
    if name == "sweep_aopc_pair":
        assert spec.objectives == ("val/disease_recall", "explain/aopc_gap") and not spec.pruned
    if name == "phantom_sweep":
        assert spec.sampler.name == "tpe" and spec.pruner.name == "median" and spec.pruned
    if name == "phantom_shortcut_sweep":
        assert spec.objectives == ("val/macro_f1", "explain/border_focus")
        assert spec.directions == ("maximize", "minimize") and spec.multi_objective and not spec.pruned
