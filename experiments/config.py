"""The resolved experiment config: a typed schema, YAML loading with validation, dotted overrides."""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help string (shown by `--help`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def _section(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help})


@dataclass
class AugmentConfig:
    """Training-time augmentation (applied to the train split only)."""

    shift: float = _f(0.0, "max translation as a fraction of the image side (0.2 = 20 %)", ge=0, le=1)
    zoom: float = _f(0.0, "max zoom in/out as a fraction (0.1 = scale in [0.9, 1.1])", ge=0, lt=1)
    rotate: float = _f(0.0, "max rotation in degrees", ge=0, le=180)
    shear: float = _f(0.0, "max shear in degrees", ge=0, lt=90)
    brightness: float = _f(0.0, "max brightness jitter as a fraction", ge=0, le=1)
    contrast: float = _f(0.0, "max contrast jitter as a fraction", ge=0, le=1)
    hflip: bool = _f(False, "random horizontal flips (off by default: anatomy is not symmetric)")
    vflip: bool = _f(False, "random vertical flips")


@dataclass
class DataConfig:
    """Where the images are and how they are split, balanced, loaded and transformed."""

    source: str = _f(
        "auto", "dataset adapter: auto (detected from data.root) or a source that `cxrlab data sources` lists"
    )
    root: str | None = _f(None, "dataset root: a folder, or a CSV file for source=csv")
    official_split: bool = _f(
        False, "use the dataset's own split (coronahack, kermany, covidx, a CSV split column) instead of "
        "data.split/folds; without an official val, val is carved from train by patient"
    )
    strict: bool = _f(
        False, "stop with an error naming the file instead of skipping it (missing file or mask, CT or "
        "excluded view, label outside the source's map, image below data.min_image_size, unreadable, duplicate)"
    )
    min_image_size: int = _f(64, "skip images whose shorter side has fewer pixels than this", ge=1)
    allow_outside_root: bool = _f(False, "accept CSV paths and symlinks that resolve outside data.root")
    views: list[str] = _f(
        ["PA", "AP", "AP Supine", "AP semi erect", "AP erect"],
        "views kept where a source records them (cohen); lateral L is left out",
    )
    modalities: list[str] = _f(["X-ray"], "modalities kept where a source records them (cohen); CT is left out")
    combine: dict[str, str] = _f(
        {}, "source=combine: {source: folder under data.root}; empty = every sub-folder auto detects"
    )
    combine_labels: dict[str, list[str]] = _f(
        {}, "source=combine: keep only these labels of a part, e.g. {cohen: [covid]}"
    )
    classes: list[str] | None = _f(None, "class names in output order (default: sorted labels found)")
    label_map: dict[str, str] = _f({}, "rename/merge labels first, e.g. {bacteria: pneumonia, virus: pneumonia}")
    other_labels: str = _f("error", "labels not in data.classes: error (default) | drop (select a task)")
    image_size: int | None = _f(None, "square input side in pixels (default: the backbone's)", ge=16)
    split: list[float] = _f([0.8, 0.1, 0.1], "holdout fractions train,val,test (ignored with folds)")
    folds: int | None = _f(None, "k for k-fold cross-validation (patient-grouped, stratified)", ge=2)
    fold: int = _f(0, "which fold is the validation fold, 0..folds-1", ge=0)
    balance: str = _f(
        "none",
        "none | downsample (whole table, before splitting) | oversample (train split) "
        "| augment_minority (each minority train image once more, augmented)",
    )
    class_weights: bool = _f(False, "weight the loss by inverse train-class frequency")
    crop_margin: float = _f(0.0, "crop this fraction from every border first (burnt-in text)", ge=0, lt=0.5)
    verify_images: bool = _f(True, "decode-check every image at setup; skip and count bad ones")
    dicom_window: str = _f(
        "auto",
        "DICOM intensities after the modality LUT: voi (the file's VOI LUT or window; min-max without "
        "one) | percentile (data.dicom_percentiles of the pixels become black and white) | auto (voi, "
        "but percentile for CR/DX/RG files of more than 8 bits whose window is missing or spans "
        "the detector range)",
    )
    dicom_percentiles: list[float] = _f(
        [0.5, 99.5], "low,high pixel percentiles that percentile windowing maps to black and white"
    )
    max_pixels: int = _f(
        50_000_000, "skip, unread, images whose header declares more pixels (decompression bombs)", ge=1
    )
    cache: str | None = _f(
        None, "decode cache folder: each image decoded, cropped and resized once to 8 bits, then read "
        "memory-mapped by every epoch, run and sweep worker"
    )
    augment: AugmentConfig = _section(AugmentConfig, "training augmentation")
    batch_size: int = _f(32, "images per batch (per device)", ge=1)
    num_workers: int = _f(2, "DataLoader worker processes", ge=0)
    start_method: str = _f(
        "auto", "how loader workers start: auto (the platform's default) | fork | spawn | forkserver"
    )
    pin_memory: bool = _f(True, "pinned host memory for faster GPU copies (ignored on CPU)")
    persistent_workers: bool = _f(True, "keep loader workers alive between epochs")


@dataclass
class ModelConfig:
    """Backbone, head, fine-tuning policy and optimiser."""

    backbone: str = _f("resnet18", "registry name (see `cxrlab models`) or timm:<name>")
    weights: str = _f("none", "imagenet | none | PATH to a state dict or cxrlab checkpoint")
    head: str = _f("gap-linear", "gap-linear | gap-mlp | maxpool-mlp")
    hidden: int = _f(256, "hidden units of the mlp heads", ge=1)
    pool: int = _f(4, "max-pool kernel and stride of the maxpool-mlp head", ge=1)
    dropout: float = _f(0.0, "dropout before the last linear layer", ge=0, lt=1)
    finetune: str = _f("full", "frozen | last:N (last N backbone blocks) | full | scratch")
    backbone_lr_mult: float = _f(1.0, "backbone learning rate = lr x this (full / last:N)", ge=0)
    optimizer: str = _f("adam", "adam | adamw | rmsprop | sgd")
    lr: float = _f(1e-3, "learning rate of the head", gt=0)
    weight_decay: float = _f(0.0, "weight decay", ge=0)
    momentum: float = _f(0.9, "momentum (sgd, rmsprop)", ge=0, lt=1)
    scheduler: str = _f("none", "none | cosine | plateau")
    label_smoothing: float = _f(0.0, "label smoothing of the cross-entropy loss", ge=0, lt=1)


@dataclass
class TrainerConfig:
    """Lightning Trainer settings plus checkpoint / early-stopping policy."""

    max_epochs: int = _f(10, "training epochs", ge=1)
    accelerator: str = _f("auto", "auto | cpu | gpu | cuda | mps")
    devices: str = _f("auto", "auto, a count (2) or a list of device ids (0,1)", join_list=True)
    strategy: str = _f("auto", "auto | ddp | ddp_spawn | ddp_find_unused_parameters_true | ...")
    num_nodes: int = _f(1, "nodes for multi-node DDP (torchrun / SLURM set the rest)", ge=1)
    precision: str = _f("auto", "auto (bf16-mixed on CUDA, 32 on CPU) | 32-true | 16-mixed | bf16-mixed")
    channels_last: bool = _f(True, "channels_last memory format on CUDA")
    limit_train_batches: float = _f(1.0, "fraction of train batches per epoch (1.0 = all) or a count (2, 3, ...)", gt=0)
    limit_val_batches: float = _f(1.0, "fraction of validation batches (1.0 = all) or a count (2, 3, ...)", gt=0)
    limit_test_batches: float = _f(1.0, "fraction of test batches (1.0 = all) or a count (2, 3, ...)", gt=0)
    fast_dev_run: bool = _f(False, "one batch of each loop; disables loggers and checkpoints")
    log_every_n_steps: int = _f(10, "how often train metrics are logged", ge=1)
    accumulate_grad_batches: int = _f(1, "gradient accumulation", ge=1)
    gradient_clip_val: float | None = _f(None, "clip gradient norm at this value", gt=0)
    deterministic: bool = _f(False, "deterministic algorithms (slower)")
    monitor: str = _f("val/macro_f1", "metric that picks the best checkpoint and early-stops")
    mode: str = _f("max", "max | min: direction of the monitor")
    patience: int | None = _f(None, "early-stopping patience in epochs (none = off)", ge=1)
    enable_progress_bar: bool = _f(True, "show the progress bar")


@dataclass
class TrackingConfig:
    """Where runs are recorded."""

    uri: str | None = _f(
        None, "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)"
    )
    experiment: str = _f("cxrlab", "MLflow experiment name")
    run_name: str | None = _f(None, "MLflow run name (default: backbone-head-finetune)")
    log_checkpoint: bool = _f(True, "upload the best checkpoint as an artifact")
    checkpoint_dir: str | None = _f(
        None, "folder for checkpoints; a shared one lets --resume run on another node "
        "(default: beside a SQLite store, else ./mlruns/checkpoints)"
    )
    upload_last: bool = _f(
        True, "with a tracking server (http/https), upload last.ckpt to the run after every epoch, "
        "so --resume runs:/RUN_ID/checkpoints/last.ckpt works on any node"
    )


@dataclass
class AOPCConfig:
    """AOPC faithfulness settings."""

    region: int = _f(34, "side of the square perturbation regions, in input pixels", ge=1)
    steps: int = _f(10, "perturbation steps L", ge=1)
    perturb: str = _f("noise", "noise | mean | zero")
    sigma: float = _f(0.1, "std of the Gaussian noise in [0,1] pixel space", gt=0)
    random_seeds: int = _f(1, "seeds of the random-order baseline (each costs as much as MoRF)", ge=1)


@dataclass
class AlarmConfig:
    """Shortcut alarm: which heatmaps count as reading outside the anatomy, and how many make the model suspect."""

    enabled: bool = _f(True, "check for a shortcut (evaluate runs it even without --explain)")
    min_lung_focus: float = _f(0.75, "flag an image whose lung focus is below this (masks needed; 1 = uniform)", ge=0)
    max_border_focus: float = _f(1.5, "flag an image whose border focus is above this", gt=0)
    max_corner_focus: float = _f(2.0, "flag an image whose corner focus is above this", gt=0)
    max_outside_body_focus: float = _f(1.5, "flag an image whose outside-body focus is above this", gt=0)
    max_share: float = _f(0.25, "the alarm fires when more than this share of explained images is flagged", ge=0, lt=1)


@dataclass
class ExplainConfig:
    """Epoch-end explanations computed on a fixed probe set of the validation split."""

    enabled: bool = _f(True, "run the explanation callback")
    every_n_epochs: int = _f(1, "explain every N validation epochs (and always at the last)", ge=1)
    probe_per_class: int = _f(8, "probe images per class drawn from the validation split", ge=1)
    methods: list[str] = _f(["gradcam"], "heatmap methods: gradcam | gradcampp | activation")
    target_layer: str | None = _f(None, "module name of the Grad-CAM layer (default: registry's)")
    aopc: AOPCConfig = _section(AOPCConfig, "AOPC settings")
    eigen: bool = _f(True, "eigen-heatmaps (per-class PCA) and average-heatmap figures")
    display_size: int = _f(224, "side of heatmaps for eigen-heatmaps and figures", ge=8)
    border_width: float = _f(0.1, "width of the image border (where text and markers sit) as a fraction of the side", gt=0, lt=0.5)
    corner_size: float = _f(0.15, "side of each corner square as a fraction of the image side", gt=0, le=0.5)
    alarm: AlarmConfig = _section(AlarmConfig, "shortcut alarm")


@dataclass
class Config:
    """One experiment."""

    seed: int = _f(0, "seed for splits, sampling and weight init", ge=0)
    data: DataConfig = _section(DataConfig, "dataset and loading")
    model: ModelConfig = _section(ModelConfig, "model and optimiser")
    trainer: TrainerConfig = _section(TrainerConfig, "trainer")
    tracking: TrackingConfig = _section(TrackingConfig, "MLflow tracking")
    explain: ExplainConfig = _section(ExplainConfig, "explanations")


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (its type's name when the message is empty), for
    one-line reports of errors raised by libraries with multi-line messages."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]


# --------------------------------------------------------------------------- schema walking


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def iter_fields(cls: type = Config, prefix: str = "") -> typing.Iterator[tuple[str, Any, Any, str]]:
    """Yield (dotted key, type, default, help) for every leaf option of the schema."""
    hints = _hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if _is_section(tp):
            yield from iter_fields(tp, key + ".")
        else:
            yield key, tp, getattr(defaults, f.name), f.metadata.get("help", "")


def type_name(tp: Any) -> str:
    """A short human name for a schema type."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return type_name(args[0]) + "?"
    if origin is list:
        return f"list[{type_name(get_args(tp)[0])}]"
    if origin is dict:
        return "map"
    if origin is Literal:
        return "|".join(map(str, get_args(tp)))
    return getattr(tp, "__name__", str(tp))


def _parse_mapping(text: str, where: str) -> Any:
    """'{a: b}' (YAML) or 'a:b,c:d' from the command line."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"{where}: {text!r} is not a valid YAML mapping") from None
    pairs = [p.split(":", 1) for p in text.split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ConfigError(f"{where}: expected key:value pairs like a:b,c:d, got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against `tp`, converting the lossless cases (int->float, "1"->1)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], where)
    if origin is dict:
        if isinstance(value, str):
            value = _parse_mapping(value, where)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping like {{a: b}}, got {value!r}")
        kt, vt = get_args(tp)
        return {coerce(k, kt, where): coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {tp}")


def did_you_mean(name: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _build(cls: type, raw: dict[str, Any], where: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, naming the offending key on any error."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or 'top level'}' must be a mapping")
    hints = _hints(cls)
    fields_by_name = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields_by_name)
    for key in raw:
        if key not in names:
            raise ConfigError(
                f"{where}: unknown key '{prefix}{key}'{did_you_mean(key, names)}; "
                f"valid keys here: {', '.join(sorted(names))}"
            )
    kwargs = {}
    for name in names & raw.keys():
        tp = hints[name]
        value = raw[name]
        if _is_section(tp):
            kwargs[name] = _build(tp, value or {}, where, f"{prefix}{name}.")
            continue
        if isinstance(value, list) and fields_by_name[name].metadata.get("join_list"):
            value = ",".join(str(v) for v in value)  # devices: [0, 1] in YAML means "0,1"
        kwargs[name] = coerce(value, tp, f"{where}: {prefix}{name}")
    return cls(**kwargs)


# --------------------------------------------------------------------------- semantic checks

class _SourceNames(collections.abc.Sequence):
    """auto + every registered dataset adapter, read from the source registry when first needed.

    The registry (datamodules.sources) is the one definition of the names; it is imported only
    when a value is checked, so importing the config (and building the CLI) stays light.
    """

    def _names(self) -> tuple[str, ...]:
        from datamodules.sources import source_names

        return ("auto", *source_names())

    def __getitem__(self, i: Any) -> Any:
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())


CHOICES = {
    "data.source": _SourceNames(),
    "data.balance": ("none", "downsample", "oversample", "augment_minority"),
    "data.other_labels": ("error", "drop"),
    "data.dicom_window": ("auto", "voi", "percentile"),
    "data.start_method": ("auto", "fork", "spawn", "forkserver"),
    "model.head": ("gap-linear", "gap-mlp", "maxpool-mlp"),
    "model.optimizer": ("adam", "adamw", "rmsprop", "sgd"),
    "model.scheduler": ("none", "cosine", "plateau"),
    "trainer.mode": ("max", "min"),
    "explain.aopc.perturb": ("noise", "mean", "zero"),
}


_BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
           "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def bounds(cls: type = Config, prefix: str = "") -> typing.Iterator[tuple[str, dict[str, float]]]:
    """Yield (dotted key, {ge/gt/le/lt: bound}) for every numeric option that declares a range."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if _is_section(hints[f.name]):
            yield from bounds(hints[f.name], f"{prefix}{f.name}.")
            continue
        rng = {k: f.metadata[k] for k in _BOUNDS if k in f.metadata}
        if rng:
            yield f"{prefix}{f.name}", rng


def range_text(rng: dict[str, float]) -> str:
    """'>= 0 and < 1' for {ge: 0, lt: 1}."""
    return " and ".join(f"{_BOUNDS[k][0]} {v:g}" for k, v in rng.items())


def _check_ranges(cfg: Config, where: str) -> None:
    for key, rng in bounds():
        value = _get(cfg, key)
        if value is not None and not all(_BOUNDS[k][1](value, b) for k, b in rng.items()):
            raise ConfigError(f"{where}: {key}={value} is out of range; it must be {range_text(rng)}")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate(cfg: Config, where: str = "config") -> Config:
    """Check values that types alone cannot (choices, ranges, combinations)."""
    _check_ranges(cfg, where)
    for key, choices in CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            raise ConfigError(
                f"{where}: {key}={value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}"
            )
    ft = cfg.model.finetune
    if ft not in ("frozen", "full", "scratch") and not (
        ft.startswith("last:") and ft[5:].isdigit() and int(ft[5:]) > 0
    ):
        raise ConfigError(
            f"{where}: model.finetune={ft!r}; use frozen, full, scratch or last:N with N >= 1"
        )
    if ft == "scratch" and cfg.model.weights != "none":
        raise ConfigError(
            f"{where}: model.finetune=scratch trains from random init; set model.weights: none "
            f"(got {cfg.model.weights!r})"
        )
    split = cfg.data.split
    if cfg.data.folds is None:
        if len(split) not in (2, 3) or any(s < 0 for s in split) or abs(sum(split) - 1) > 1e-6:
            raise ConfigError(
                f"{where}: data.split={split} must be 2 or 3 non-negative fractions summing to 1 "
                "(e.g. [0.8, 0.1, 0.1])"
            )
    elif cfg.data.fold >= cfg.data.folds:
        raise ConfigError(f"{where}: data.fold={cfg.data.fold} must be in 0..{cfg.data.folds - 1}")
    for m in cfg.explain.methods:
        if m not in ("gradcam", "gradcampp", "activation"):
            raise ConfigError(
                f"{where}: explain.methods has {m!r}; choose from gradcam, gradcampp, activation"
            )
    low_high = cfg.data.dicom_percentiles
    if len(low_high) != 2 or not 0 <= low_high[0] < low_high[1] <= 100:
        raise ConfigError(
            f"{where}: data.dicom_percentiles={low_high} must be two percentiles low < high in [0, 100] "
            "(e.g. [0.5, 99.5])"
        )
    if cfg.data.classes is not None and len(set(cfg.data.classes)) != len(cfg.data.classes):
        raise ConfigError(f"{where}: data.classes has duplicates: {cfg.data.classes}")
    if cfg.data.other_labels == "drop" and cfg.data.classes is None:
        raise ConfigError(f"{where}: data.other_labels=drop needs data.classes (the labels to keep)")
    if cfg.data.official_split and cfg.data.folds is not None:
        raise ConfigError(
            f"{where}: data.official_split and data.folds={cfg.data.folds} exclude each other; drop one"
        )
    return cfg


# --------------------------------------------------------------------------- public API


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `d['a']['b'] = value` for `dotted='a.b'`, creating sections as needed."""
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


def _yaml_where(e: yaml.YAMLError) -> str:
    """' at line 3, column 7 (mapping values are not allowed here)' from a YAML error, on one line."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None)
    return f"{where} ({problem})" if problem else where


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing YAML (see experiments/configs/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML{_yaml_where(e)}; fix the syntax there") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data:, model:, ...)")
    return raw


def from_dict(raw: dict[str, Any], where: str = "config") -> Config:
    """Build and validate a Config from a nested dict."""
    return validate(_build(Config, _official_split_spelling(raw), where), where)


def _official_split_spelling(raw: dict[str, Any]) -> dict[str, Any]:
    """`data.split: official` is read as `data.official_split: true` (the resolved spelling)."""
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("split"), str) and data["split"].strip() == "official":
        data = {k: v for k, v in data.items() if k != "split"} | {"official_split": True}
        raw = raw | {"data": data}
    return raw


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    extra_sections: tuple[str, ...] = (),
) -> Config:
    """Load YAML (optional), apply dotted overrides, validate.

    `extra_sections` are top-level keys that another runner reads itself (a sweep's `search:`)
    and that are dropped here.
    """
    raw = read_yaml(path) if path else {}
    for key in extra_sections:
        raw.pop(key, None)
    where = str(path) if path else "config"
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
        where = f"{where} (with overrides)" if "overrides" not in where else where
    return from_dict(raw, where)


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain nested dicts (YAML / checkpoint / MLflow friendly)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
