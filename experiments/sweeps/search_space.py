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

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from pydantic import ValidationError

from experiments.config.messages import config_error
from experiments.sweeps.search_schema import PRUNERS, SAMPLERS, Param, SweepFile


@dataclass(frozen=True)
class SweepSpec:
    """Everything the `search:` block decides about a study, as the launcher and trials read it
    (the defaults live in the schema, experiments/sweeps/search_schema.py)."""

    params: tuple[Param, ...]
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    sampler: str
    sampler_options: Mapping[str, Any]
    pruner: str
    pruner_options: Mapping[str, Any]
    seed: int
    n_trials: int | None
    study_name: str | None
    heartbeat_interval: int
    grace_period: int
    max_retry: int | None

    @property
    def multi_objective(self) -> bool:
        """More than one objective: a Pareto front, and no pruning (Optuna cannot prune it)."""
        return len(self.objectives) > 1

    @property
    def pruned(self) -> bool:
        """Whether trials report intermediate values and may be pruned."""
        return not self.multi_objective and self.pruner != "none"

    def grid(self) -> dict[str, list[Any]]:
        """The fixed grid of a `sampler: grid` study (every parameter's values)."""
        return {p.name: list(p.values) for p in self.params}

    def grid_size(self) -> int:
        """Number of points of the fixed grid."""
        return math.prod(len(p.values) for p in self.params)


def parse_search(raw: Any, where: str) -> SweepSpec:
    """Validate a `search:` block; every error names `where` (the YAML file) and the key."""
    try:
        search = SweepFile.model_validate({"search": raw}).search
    except ValidationError as e:
        raise config_error(e, where, SweepFile) from None
    return SweepSpec(
        params=tuple(search.params.values()),
        objectives=search.objectives,
        directions=search.directions,
        sampler=search.sampler.name,
        sampler_options=search.sampler.options,
        pruner=search.pruner.name,
        pruner_options=search.pruner.options,
        seed=search.seed,
        n_trials=search.n_trials,
        study_name=search.study_name,
        heartbeat_interval=search.heartbeat.interval,
        grace_period=search.heartbeat.grace,
        max_retry=search.heartbeat.max_retry,
    )


# --------------------------------------------------------------------------- optuna objects


def build_sampler(spec: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded (a grid keeps spec.seed so every worker shuffles alike)."""
    cls = SAMPLERS[spec.sampler]
    if spec.sampler == "grid":
        return cls(spec.grid(), seed=spec.seed, **spec.sampler_options)
    return cls(seed=seed, **spec.sampler_options)


def build_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """The study's pruner; a multi-objective study is never pruned."""
    if not spec.pruned:
        return optuna.pruners.NopPruner()
    return PRUNERS[spec.pruner](**spec.pruner_options)


def corner_points(spec: SweepSpec, base: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every combination a study can sample, with each range at its two ends: what a sweep
    config is checked on before any worker starts. `base` is the flattened base config."""

    def walk(i: int, chosen: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if i == len(spec.params):
            yield dict(chosen)
            return
        p = spec.params[i]
        if not all(chosen.get(k, base.get(k)) in allowed for k, allowed in p.when.items()):
            yield from walk(i + 1, chosen)
            return
        ends = (int(p.low), int(p.high)) if p.kind == "int" else (p.low, p.high)
        for value in p.values if p.kind == "categorical" else ends:
            yield from walk(i + 1, {**chosen, p.name: value})

    return walk(0, {})


def suggest(trial: optuna.Trial, spec: SweepSpec, base: Mapping[str, Any]) -> dict[str, Any]:
    """Suggest the trial's parameters in YAML order; `base` holds the flattened base config that
    conditions on unsearched keys read. Returns {dotted key: value} for the searched keys."""
    chosen: dict[str, Any] = {}
    for p in spec.params:
        if not all(chosen.get(k, base.get(k)) in allowed for k, allowed in p.when.items()):
            continue
        if p.kind == "categorical":
            chosen[p.name] = trial.suggest_categorical(p.name, list(p.values))
        elif p.kind == "int":
            chosen[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            chosen[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
    return chosen
