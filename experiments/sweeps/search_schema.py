"""The `search:` block of a sweep config as a typed schema: every key, default and choice once.

The shape (keys, defaults, samplers, pruners, ranges) is declared here as pydantic models; the
values a parameter sets are typed by the config field it names, so a searched value is checked
exactly as the same value in a training config would be. Errors become the config's one-line
messages (cxrlab.config.messages), naming the file and the key.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, ClassVar, Literal, get_origin

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from cxrlab.config import ConfigError, coerce, did_you_mean, iter_fields
from cxrlab.config.errors import invalid
from cxrlab.config.lenient import optional_inner

SamplerName = Literal["tpe", "random", "cmaes", "nsga2", "grid"]
PrunerName = Literal["median", "hyperband", "percentile", "threshold", "none"]
Direction = Literal["maximize", "minimize"]
# Keyed by the choices above (tests/test_search_space.py checks that they match).
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
DIRECTION_ALIASES = {"max": "maximize", "min": "minimize"}
OBJECTIVE_PREFIXES = ("val/", "explain/")
# Where the parameters sit in a sweep YAML, for messages about what lies below a parameter's key.
PARAMS_AT = "search.params"


@cache
def config_types() -> dict[str, Any]:
    """{dotted config key: its schema type} of every leaf option a sweep may search."""
    return {key: tp for key, tp, _, _ in iter_fields()}


def scalar_type(tp: Any) -> Any:
    """The scalar type of a schema field (Optional stripped), or None for lists and maps."""
    inner, _ = optional_inner(tp)
    return None if get_origin(inner) in (list, dict) else inner


def _config_type(key: str, where: str) -> Any:
    """The schema type of a scalar dotted config key, or a one-line error naming `where`."""
    types_ = config_types()
    if key not in types_:
        raise invalid(f"{where}: '{key}' is not a config key{did_you_mean(key, types_)}")
    if scalar_type(types_[key]) is None:
        raise invalid(f"{where}: '{key}' is a list or mapping; only scalar config keys can be searched")
    return types_[key]


def _typed(value: Any, tp: Any, where: str) -> Any:
    """`value` read as the config reads a value of type `tp`; its error as a whole line."""
    try:
        return coerce(value, tp, where)
    except ConfigError as e:
        raise invalid(str(e)) from None


def _typed_values(values: Any, tp: Any, where: str) -> tuple[Any, ...]:
    """Categorical values typed by the config field, which checks them against its choices."""
    if not isinstance(values, list) or not values:
        raise invalid(f"{where}: expected a non-empty list of values, got {values!r}")
    out = tuple(_typed(v, tp, f"{where}[{i}]") for i, v in enumerate(values))
    if len(set(map(repr, out))) != len(out):
        raise invalid(f"{where}: values repeat: {values}")
    return out


def _typed_conditions(when: Any, name: str, where: str) -> dict[str, tuple[Any, ...]]:
    """`when: {other.key: [v1, v2]}`, each value typed by its config key: search `name` only when
    other.key takes one of those values."""
    if not isinstance(when, dict):
        raise invalid(f"{where}: expected a mapping like {{model.head: [gap-mlp, maxpool-mlp]}}")
    if name in when:
        raise invalid(f"{where}: '{name}' cannot depend on itself")
    return {
        cond: _typed_values(v if isinstance(v, list) else [v], _config_type(cond, f"{where}.{cond}"), f"{where}.{cond}")
        for cond, v in when.items()
    }


class Strict(BaseModel):
    """A part of the search block: unknown keys are errors; numbers may name a study."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, frozen=True)


class Param(Strict):
    """One searched config key: categorical `values`, or an int/float range, typed by that key."""

    # Set from the parameter's key, not written in the file (exclude keeps it out of "valid keys").
    name: str = Field(description="the dotted config key it sets", exclude=True)
    values: tuple[Any, ...] = Field((), description="the choices of a categorical parameter (none for a range)")
    low: int | float | None = Field(None, description="lower end of a range")
    high: int | float | None = Field(None, description="upper end of a range")
    step: int | float | None = Field(None, description="step of a range (none = continuous)")
    log: bool = Field(False, description="sample the range log-uniformly")
    when: dict[str, tuple[Any, ...]] = Field(
        {}, description="search this key only when each listed config key takes one of its values"
    )

    @model_validator(mode="before")
    @classmethod
    def _typed_by_config(cls, raw: Any) -> Any:
        """Values, ends and conditions read as the config fields they set."""
        if not isinstance(raw, dict):
            return raw
        name, raw = raw["name"], dict(raw)
        where = f"{PARAMS_AT}.{name}"
        tp = _config_type(name, where)
        if "values" in raw:
            raw["values"] = _typed_values(raw["values"], tp, f"{where}.values")
        elif scalar_type(tp) not in (int, float):
            raise invalid(f"{where}: '{name}' is not numeric; list its choices as values: [...]")
        else:
            for end in ("low", "high", "step"):
                if raw.get(end) is not None:
                    raw[end] = _typed(raw[end], scalar_type(tp), f"{where}.{end}")
        if "when" in raw:
            raw["when"] = _typed_conditions(raw["when"], name, f"{where}.when")
        return raw

    @model_validator(mode="after")
    def _range(self) -> Param:
        if self.values:
            extra = [k for k in ("low", "high", "step", "log") if k in self.model_fields_set]
            if extra:
                raise ValueError(f"'values' excludes {', '.join(extra)}; give either values or low/high")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give values: [...])")
        if not self.low < self.high:
            raise ValueError(f"low={self.low} must be below high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low})")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0 (got {self.step})")
        if self.log and self.step is not None and not (self.kind == "int" and self.step == 1):
            raise ValueError("log and step exclude each other; drop one")
        return self

    @property
    def kind(self) -> str:
        """categorical, int or float (a range takes the type of the config field it sets)."""
        if self.values:
            return "categorical"
        return "int" if scalar_type(config_types()[self.name]) is int else "float"


class Named(Strict):
    """`sampler: tpe` or `sampler: {name: tpe, n_startup_trials: 5}`: a name and its options."""

    TABLE: ClassVar[Mapping[str, Callable[..., Any]]]
    KIND: ClassVar[str]
    name: str
    options: dict[str, Any] = Field({}, description="keyword arguments of the Optuna class")

    @model_validator(mode="before")
    @classmethod
    def _split(cls, raw: Any) -> Any:
        if raw is None:  # `sampler:` left empty: the defaults
            raw = {}
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            return raw
        named = {"name": str(raw["name"]).lower()} if "name" in raw else {}
        return named | {"options": {k: v for k, v in raw.items() if k != "name"}}

    @model_validator(mode="after")
    def _options_fit(self) -> Named:
        reserved = {"seed", "search_space"} & self.options.keys()
        if reserved:
            raise ValueError(f"set {', '.join(sorted(reserved))} elsewhere (search.seed, search.params)")
        try:
            inspect.signature(self.TABLE[self.name]).bind_partial(**self.options)
        except TypeError as e:
            raise ValueError(f"{self.KIND} {self.name} does not take these options ({e})") from None
        return self


class Sampler(Named):
    """The study's sampler (seeded by search.seed)."""

    TABLE = SAMPLERS
    KIND = "sampler"
    name: SamplerName = Field("tpe", description="Optuna sampler")


class Pruner(Named):
    """The study's pruner (a multi-objective study is never pruned)."""

    TABLE = PRUNERS
    KIND = "pruner"
    name: PrunerName = Field("median", description="Optuna pruner")


class Heartbeat(Strict):
    """How a lost worker is noticed. Its launcher re-queues a dead worker's trial at once; the
    grace period is the fallback for what the launcher cannot see (a whole node lost), so it
    stays short."""

    interval: int = Field(10, description="seconds between a running trial's heartbeats", ge=1)
    grace: int = Field(
        default_factory=lambda data: 3 * data["interval"],
        description="seconds without a heartbeat before a trial is re-queued (default 3 x interval)",
    )
    max_retry: int | None = Field(3, description="re-queues of one trial (null = retry forever)", ge=0)

    @model_validator(mode="after")
    def _grace_after_interval(self) -> Heartbeat:
        if self.grace <= self.interval:
            raise ValueError(f"need grace > interval (got interval {self.interval}, grace {self.grace})")
        return self


class SearchConfig(Strict):
    """A sweep config's `search:` block."""

    study_name: str | None = Field(None, description="Optuna study name (default: the config file's name)")
    n_trials: int | None = Field(None, description="new trials per launch (default: until stopped)", ge=1)
    objectives: tuple[str, ...] = Field(
        ("val/macro_f1",), description="val/* or explain/* metrics to optimise; several = a Pareto front"
    )
    directions: tuple[Direction, ...] = Field(
        (), description="one per objective; none = minimize *loss, maximize the rest", validate_default=True
    )
    sampler: Sampler = Field(default_factory=Sampler, description="sampler")
    pruner: Pruner = Field(default_factory=Pruner, description="pruner")
    seed: int = Field(0, description="sampler seed")
    params: dict[str, Param] = Field(description="config keys to search, in the order they are suggested")
    heartbeat: Heartbeat = Field(default_factory=Heartbeat, description="lost-worker detection")

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, raw: Any) -> Any:
        """Each parameter named by its key (a list = its values); one objective or direction alone."""
        if not isinstance(raw, dict):
            return raw
        params = raw.get("params")
        if not isinstance(params, dict) or not params:
            raise invalid(f"{PARAMS_AT}: expected a mapping of config keys to search, e.g. model.lr: {{...}}")
        raw = dict(raw)
        raw["params"] = {str(k): _named_param(str(k), v) for k, v in params.items()}
        for key in ("objectives", "directions"):
            if isinstance(raw.get(key), str):
                raw[key] = [raw[key]]
        if isinstance(raw.get("directions"), list):
            raw["directions"] = [DIRECTION_ALIASES.get(str(d).lower(), str(d).lower()) for d in raw["directions"]]
        return raw

    @field_validator("objectives")
    @classmethod
    def _validation_metrics(cls, objectives: tuple[str, ...]) -> tuple[str, ...]:
        if not objectives:
            raise ValueError("expected a list of metric names like [val/macro_f1]")
        for o in objectives:
            if not o.startswith(OBJECTIVE_PREFIXES):
                raise ValueError(
                    f"{o!r} is not a validation or explanation metric (val/*, explain/*); "
                    "optimising on test/* would leak the test set"
                )
        if len(set(objectives)) != len(objectives):
            raise ValueError(f"{list(objectives)} repeats a metric")
        return objectives

    @field_validator("directions")
    @classmethod
    def _one_per_objective(cls, directions: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        objectives = info.data.get("objectives")
        if objectives is None:  # already reported
            return directions
        if not directions:
            return tuple("minimize" if o.endswith("loss") else "maximize" for o in objectives)
        if len(directions) != len(objectives):
            raise ValueError(
                f"give one of maximize|minimize per objective ({len(objectives)}), got {list(directions)}"
            )
        return directions

    @model_validator(mode="after")
    def _consistent(self) -> SearchConfig:
        searched = list(self.params)
        for i, (key, param) in enumerate(self.params.items()):
            for cond in param.when:
                if cond in searched[i + 1:]:
                    raise invalid(f"{PARAMS_AT}.{key}.when: '{cond}' is searched after '{key}'; list it first")
        if self.sampler.name == "cmaes" and len(self.objectives) > 1:
            raise invalid(f"search.sampler: cmaes is single-objective; use tpe or nsga2 for {list(self.objectives)}")
        if self.sampler.name == "grid":
            for key, param in self.params.items():
                if param.kind != "categorical":
                    raise invalid(f"{PARAMS_AT}.{key}: sampler grid needs values: [...] for every parameter")
                if param.when:
                    raise invalid(
                        f"{PARAMS_AT}.{key}: a grid sets every parameter at every point, so 'when' "
                        "does not apply; drop it or use another sampler"
                    )
        return self

    @property
    def multi_objective(self) -> bool:
        """More than one objective: a Pareto front, and no pruning (Optuna cannot prune it)."""
        return len(self.objectives) > 1

    @property
    def pruned(self) -> bool:
        """Whether trials report intermediate values and may be pruned."""
        return not self.multi_objective and self.pruner.name != "none"

    def grid(self) -> dict[str, list[Any]]:
        """The fixed grid of a `sampler: grid` study (every parameter's values)."""
        return {key: list(p.values) for key, p in self.params.items()}

    def grid_size(self) -> int:
        """Number of points of the fixed grid."""
        return math.prod(len(p.values) for p in self.params.values())


def _named_param(key: str, raw: Any) -> dict[str, Any]:
    """A parameter's entry with its key as its name; a list is its values."""
    if isinstance(raw, list):
        return {"name": key, "values": raw}
    if not isinstance(raw, dict):
        raise invalid(
            f"{PARAMS_AT}.{key}: give a list of values, or a mapping like {{low: 1.0e-4, high: 1.0e-2, log: true}}"
        )
    return {**raw, "name": key}


class SweepFile(BaseModel):
    """What parse_search validates: the search block under its key, so messages name it."""

    search: SearchConfig
