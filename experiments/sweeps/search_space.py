"""The `search:` block of a sweep config: checked by its schema (search_schema.py), then suggested define-by-run.

A sweep YAML is a training config plus a `search:` block whose parameter names are the dotted
config keys they set, so every trial is an ordinary config and every MLflow run compares on them:

    search:
      objectives: [val/macro_f1]            # any val/* or explain/* metric; several = Pareto front
      sampler: tpe                          # tpe | random | cmaes | nsga2 | grid, or {name: tpe, ...}
      pruner: median                        # median | hyperband | percentile | threshold | none
      n_trials: 20
      params:
        model.backbone: [resnet18, mobilenet_v3_large]       # a list = categorical
        model.lr: {low: 1.0e-4, high: 1.0e-2, log: true}      # float field -> float, int -> int
        model.hidden: {values: [128, 256], when: {model.head: [gap-mlp, maxpool-mlp]}}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import optuna
from pydantic import ValidationError

from cxrlab.config.messages import config_error
from cxrlab.experiments.sweeps.search_schema import PRUNERS, SAMPLERS, SearchConfig, SweepFile


def parse_search(raw: Any, where: str) -> SearchConfig:
    """Validate a `search:` block; every error names `where` (the YAML file) and the key."""
    try:
        return SweepFile.model_validate({"search": raw}).search
    except ValidationError as e:
        raise config_error(e, where, SweepFile) from None


# --------------------------------------------------------------------------- optuna objects


def build_sampler(spec: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded (a grid keeps spec.seed so every worker shuffles alike)."""
    cls = SAMPLERS[spec.sampler.name]
    if spec.sampler.name == "grid":
        return cls(spec.grid(), seed=spec.seed, **spec.sampler.options)
    return cls(seed=seed, **spec.sampler.options)


def build_pruner(spec: SearchConfig) -> optuna.pruners.BasePruner:
    """The study's pruner; a multi-objective study is never pruned."""
    if not spec.pruned:
        return optuna.pruners.NopPruner()
    return PRUNERS[spec.pruner.name](**spec.pruner.options)


def corner_points(spec: SearchConfig, base: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every combination a study can sample, with each range at its two ends: what a sweep
    config is checked on before any worker starts. `base` is the flattened base config."""

    params = list(spec.params.values())

    def walk(i: int, chosen: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if i == len(params):
            yield dict(chosen)
            return
        p = params[i]
        if not all(chosen.get(k, base.get(k)) in allowed for k, allowed in p.when.items()):
            yield from walk(i + 1, chosen)
            return
        ends = (int(p.low), int(p.high)) if p.kind == "int" else (p.low, p.high)
        for value in p.values if p.kind == "categorical" else ends:
            yield from walk(i + 1, {**chosen, p.name: value})

    return walk(0, {})


def suggest(trial: optuna.Trial, spec: SearchConfig, base: Mapping[str, Any]) -> dict[str, Any]:
    """Suggest the trial's parameters in YAML order; `base` holds the flattened base config that
    conditions on unsearched keys read. Returns {dotted key: value} for the searched keys."""
    chosen: dict[str, Any] = {}
    for p in spec.params.values():
        if not all(chosen.get(k, base.get(k)) in allowed for k, allowed in p.when.items()):
            continue
        if p.kind == "categorical":
            chosen[p.name] = trial.suggest_categorical(p.name, list(p.values))
        elif p.kind == "int":
            chosen[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            chosen[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
    return chosen
