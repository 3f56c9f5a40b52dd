"""The `search:` block of a sweep config: parsed and validated once, then suggested define-by-run.

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

import inspect
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin

import optuna

from experiments.config import ConfigError, coerce, did_you_mean, iter_fields

SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "grid": optuna.samplers.GridSampler,
}
PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}
SEARCH_KEYS = (
    "study_name", "n_trials", "objectives", "directions", "sampler", "pruner", "seed", "params",
    "heartbeat",
)
PARAM_KEYS = ("values", "low", "high", "step", "log", "when")
HEARTBEAT_KEYS = ("interval", "grace", "max_retry")
OBJECTIVE_PREFIXES = ("val/", "explain/")


@dataclass(frozen=True)
class Param:
    """One searched config key: categorical `values`, or an int/float range."""

    name: str
    kind: str  # categorical | int | float
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepSpec:
    """Everything the `search:` block decides about a study."""

    params: tuple[Param, ...]
    objectives: tuple[str, ...] = ("val/macro_f1",)
    directions: tuple[str, ...] = ("maximize",)
    sampler: str = "tpe"
    sampler_options: Mapping[str, Any] = field(default_factory=dict)
    pruner: str = "median"
    pruner_options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    n_trials: int | None = None
    study_name: str | None = None
    # A dead worker's trial is re-queued by its launcher at once; the grace period is the fallback
    # for what the launcher cannot see (a whole node lost), so it stays short.
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int | None = 3

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


# --------------------------------------------------------------------------- parsing


def _field_types() -> dict[str, Any]:
    return {key: tp for key, tp, _, _ in iter_fields()}


def _scalar_type(tp: Any) -> Any:
    """The scalar type of a schema field (Optional stripped), or None for lists and maps."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
    return None if get_origin(tp) in (list, dict) else tp


def _check_keys(raw: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key '{key}'{did_you_mean(str(key), allowed)}; valid keys: {', '.join(allowed)}"
            )


def _config_key(key: str, types_: Mapping[str, Any], where: str) -> Any:
    """The schema type of a scalar dotted config key, or a ConfigError naming it."""
    if key not in types_:
        raise ConfigError(f"{where}: '{key}' is not a config key{did_you_mean(key, types_)}")
    if _scalar_type(types_[key]) is None:
        raise ConfigError(f"{where}: '{key}' is a list or mapping; only scalar config keys can be searched")
    return types_[key]


def _choice_values(values: Any, tp: Any, where: str) -> tuple[Any, ...]:
    """Categorical values coerced to the field's type, which checks them against its choices."""
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: expected a non-empty list of values, got {values!r}")
    out = tuple(coerce(v, tp, f"{where}[{i}]") for i, v in enumerate(values))
    if len(set(map(repr, out))) != len(out):
        raise ConfigError(f"{where}: values repeat: {values}")
    return out


def _parse_param(key: str, raw: Any, types_: Mapping[str, Any], where: str) -> Param:
    where = f"{where}.{key}"
    tp = _config_key(key, types_, where)
    if isinstance(raw, list):
        raw = {"values": raw}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: give a list of values, or a mapping like {{low: 1.0e-4, high: 1.0e-2, log: true}}"
        )
    _check_keys(raw, PARAM_KEYS, where)
    when = _parse_when(raw.get("when", {}), key, types_, f"{where}.when")
    if "values" in raw:
        extra = sorted(set(raw) - {"values", "when"})
        if extra:
            raise ConfigError(f"{where}: 'values' excludes {', '.join(extra)}; give either values or low/high")
        return Param(key, "categorical", _choice_values(raw["values"], tp, f"{where}.values"), when=when)
    tp = _scalar_type(tp)
    if tp not in (int, float):
        raise ConfigError(f"{where}: '{key}' is not numeric; list its choices as values: [...]")
    if "low" not in raw or "high" not in raw:
        raise ConfigError(f"{where}: a range needs both low and high (or give values: [...])")
    low, high = (coerce(raw[k], tp, f"{where}.{k}") for k in ("low", "high"))
    step = coerce(raw["step"], tp, f"{where}.step") if raw.get("step") is not None else None
    log = coerce(raw.get("log", False), bool, f"{where}.log")
    if not low < high:
        raise ConfigError(f"{where}: low={low} must be below high={high}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0 (got {low})")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}: step must be > 0 (got {step})")
    if log and step is not None and not (tp is int and step == 1):
        raise ConfigError(f"{where}: log and step exclude each other; drop one")
    return Param(key, "int" if tp is int else "float", low=low, high=high, step=step, log=log, when=when)


def _parse_when(raw: Any, key: str, types_: Mapping[str, Any], where: str) -> dict[str, tuple[Any, ...]]:
    """`when: {other.key: [v1, v2]}`: search `key` only when other.key takes one of those values."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping like {{model.head: [gap-mlp, maxpool-mlp]}}")
    out = {}
    for cond, values in raw.items():
        if cond == key:
            raise ConfigError(f"{where}: '{key}' cannot depend on itself")
        tp = _config_key(cond, types_, f"{where}.{cond}")
        values = values if isinstance(values, list) else [values]
        out[cond] = _choice_values(values, tp, f"{where}.{cond}")
    return out


def _parse_heartbeat(raw: Any, where: str) -> tuple[int, int, int | None]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping like {{interval: 10, grace: 30, max_retry: 3}}")
    _check_keys(raw, HEARTBEAT_KEYS, where)
    interval = coerce(raw.get("interval", SweepSpec.heartbeat_interval), int, f"{where}.interval")
    grace = coerce(raw.get("grace", 3 * interval), int, f"{where}.grace")
    retry = raw.get("max_retry", 3)
    retry = None if retry is None else coerce(retry, int, f"{where}.max_retry")
    if interval < 1 or grace <= interval:
        raise ConfigError(f"{where}: need interval >= 1 s and grace > interval (got {interval}, {grace})")
    if retry is not None and retry < 0:
        raise ConfigError(f"{where}.max_retry: must be >= 0 or null (retry forever)")
    return interval, grace, retry


def _named_options(
    raw: Any, table: Mapping[str, Callable[..., Any]], default: str, what: str, where: str
) -> tuple[str, dict[str, Any]]:
    """`sampler: tpe` or `sampler: {name: tpe, n_startup_trials: 5}` -> (name, options)."""
    if raw is None:
        return default, {}
    options = dict(raw) if isinstance(raw, dict) else {"name": raw}
    name = str(options.pop("name", default)).lower()
    if name not in table:
        raise ConfigError(f"{where}: {what} {name!r} is not one of {', '.join(table)}{did_you_mean(name, table)}")
    reserved = {"seed", "search_space"} & options.keys()
    if reserved:
        raise ConfigError(f"{where}: set {', '.join(sorted(reserved))} elsewhere (search.seed, search.params)")
    try:
        inspect.signature(table[name]).bind_partial(**options)
    except TypeError as e:
        raise ConfigError(f"{where}: {what} {name} does not take these options ({e})") from None
    return name, options


def _parse_objectives(raw: dict[str, Any], where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    objectives = raw.get("objectives", ["val/macro_f1"])
    objectives = [objectives] if isinstance(objectives, str) else objectives
    if not isinstance(objectives, list) or not objectives or not all(isinstance(o, str) for o in objectives):
        raise ConfigError(f"{where}.objectives: expected a list of metric names like [val/macro_f1]")
    for o in objectives:
        if not o.startswith(OBJECTIVE_PREFIXES):
            raise ConfigError(
                f"{where}.objectives: {o!r} is not a validation or explanation metric (val/*, explain/*); "
                "optimising on test/* would leak the test set"
            )
    if len(set(objectives)) != len(objectives):
        raise ConfigError(f"{where}.objectives: {objectives} repeats a metric")
    directions = raw.get("directions")
    if directions is None:
        directions = ["minimize" if o.endswith("loss") else "maximize" for o in objectives]
    directions = [directions] if isinstance(directions, str) else directions
    aliases = {"max": "maximize", "min": "minimize", "maximize": "maximize", "minimize": "minimize"}
    if not isinstance(directions, list) or len(directions) != len(objectives) or any(
        str(d).lower() not in aliases for d in directions
    ):
        raise ConfigError(
            f"{where}.directions: give one of maximize|minimize per objective ({len(objectives)}), got {directions}"
        )
    return tuple(objectives), tuple(aliases[str(d).lower()] for d in directions)


def parse_search(raw: Any, where: str) -> SweepSpec:
    """Validate a `search:` block; every error names `where` (the YAML file) and the key."""
    where = f"{where}: search"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with params: (see experiments/configs/phantom_sweep.yaml)")
    _check_keys(raw, SEARCH_KEYS, where)
    if not isinstance(raw.get("params"), dict) or not raw["params"]:
        raise ConfigError(f"{where}.params: expected a mapping of config keys to search, e.g. model.lr: {{...}}")
    types_ = _field_types()
    params: dict[str, Param] = {}
    for key, spec in raw["params"].items():
        params[key] = _parse_param(str(key), spec, types_, f"{where}.params")
        for cond in params[key].when:
            if cond in raw["params"] and cond not in params:
                raise ConfigError(
                    f"{where}.params.{key}.when: '{cond}' is searched after '{key}'; list it first"
                )
    objectives, directions = _parse_objectives(raw, where)
    sampler, sampler_options = _named_options(raw.get("sampler"), SAMPLERS, "tpe", "sampler", f"{where}.sampler")
    pruner, pruner_options = _named_options(raw.get("pruner"), PRUNERS, "median", "pruner", f"{where}.pruner")
    if sampler == "cmaes" and len(objectives) > 1:
        raise ConfigError(f"{where}.sampler: cmaes is single-objective; use tpe or nsga2 for {list(objectives)}")
    if sampler == "grid":
        for p in params.values():
            if p.kind != "categorical":
                raise ConfigError(f"{where}.params.{p.name}: sampler grid needs values: [...] for every parameter")
            if p.when:
                raise ConfigError(
                    f"{where}.params.{p.name}: a grid sets every parameter at every point, so 'when' "
                    "does not apply; drop it or use another sampler"
                )
    n_trials = raw.get("n_trials")
    if n_trials is not None:
        n_trials = coerce(n_trials, int, f"{where}.n_trials")
        if n_trials < 1:
            raise ConfigError(f"{where}.n_trials: must be >= 1")
    interval, grace, retry = _parse_heartbeat(raw.get("heartbeat", {}), f"{where}.heartbeat")
    study_name = raw.get("study_name")
    return SweepSpec(
        params=tuple(params.values()),
        objectives=objectives,
        directions=directions,
        sampler=sampler,
        sampler_options=sampler_options,
        pruner=pruner,
        pruner_options=pruner_options,
        seed=coerce(raw.get("seed", 0), int, f"{where}.seed"),
        n_trials=n_trials,
        study_name=None if study_name is None else str(study_name),
        heartbeat_interval=interval,
        grace_period=grace,
        max_retry=retry,
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
