"""The typed config: defaults, YAML + dotted overrides, and the messages for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cxrlab.config import (
    Config,
    ConfigError,
    flatten,
    from_dict,
    iter_fields,
    load_config,
    to_dict,
    to_yaml,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "configs"
SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_load() -> None:
    cfg = load_config()
    assert cfg == Config()
    assert cfg.model.backbone == "resnet18"
    assert cfg.model.weights == "none"
    assert cfg.data.split == [0.8, 0.1, 0.1]
    assert cfg.trainer.monitor == "auto"  # val/macro_f1, or val/macro_auroc for a multi-label task
    assert cfg.data.task == "auto"
    assert cfg.explain.aopc.sigma == 0.1


def test_mutable_defaults_are_not_shared() -> None:
    a, b = Config(), Config()
    a.data.split.append(0.5)
    a.data.label_map["x"] = "y"
    assert b.data.split == [0.8, 0.1, 0.1]
    assert b.data.label_map == {}


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "exp.yaml",
        {"seed": 3, "data": {"image_size": 64, "augment": {"rotate": 10}}, "model": {"lr": 0.01}},
    )
    cfg = load_config(
        path, {"model.lr": "2e-4", "data.augment.shift": "0.1", "trainer.max_epochs": "4"}
    )
    assert cfg.seed == 3
    assert cfg.data.image_size == 64
    assert cfg.data.augment.rotate == 10.0
    assert cfg.data.augment.shift == pytest.approx(0.1)
    assert cfg.model.lr == pytest.approx(2e-4)  # the override wins over the file
    assert cfg.trainer.max_epochs == 4 and isinstance(cfg.trainer.max_epochs, int)


def test_empty_section_and_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == Config()
    (tmp_path / "bare.yaml").write_text("data:\nmodel:\n  lr: 0.5\n")
    cfg = load_config(tmp_path / "bare.yaml")
    assert cfg.data == Config().data and cfg.model.lr == 0.5


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path, extra_sections=("search",))
    assert isinstance(cfg, Config)
    # Round trip: the resolved YAML rebuilds the same config (this is what MLflow stores).
    assert from_dict(yaml.safe_load(to_yaml(cfg))) == cfg


def test_shipped_configs_exist() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"ci_tiny", "phantom_demo"} <= names
    assert len(SHIPPED) >= 6


def test_extra_sections_are_dropped(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "sweep.yaml", {"model": {"lr": 0.1}, "search": {"n_trials": 5}})
    assert load_config(path, extra_sections=("search",)).model.lr == 0.1
    with pytest.raises(ConfigError, match="unknown key 'search'"):
        load_config(path)


def test_unknown_key_names_file_and_suggests(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "typo.yaml", {"data": {"rooot": "x"}})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "'data.rooot'" in msg and "did you mean 'root'" in msg


def test_unknown_section_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'modle' \(did you mean 'model'\?\)"):
        load_config(overrides={"modle.lr": 1})


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: the top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="'data' must be a mapping"):
        from_dict({"data": 3})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("trainer.max_epochs", "ten", "trainer.max_epochs: expected an integer, got 'ten'"),
        ("trainer.max_epochs", True, "trainer.max_epochs: expected an integer, got True"),
        ("trainer.max_epochs", 2.5, "expected an integer, got 2.5"),
        ("model.lr", "fast", "model.lr: expected a number, got 'fast'"),
        ("data.augment.hflip", "maybe", "data.augment.hflip: expected true or false"),
        ("model.backbone", True, "model.backbone: expected a string"),
        ("data.split", 0.5, "data.split: expected a list"),
        ("data.label_map", "a,b", "data.label_map: expected key:value pairs"),
        ("data.label_map", "{a: [", "data.label_map: '{a: [' is not a valid YAML mapping"),
        ("data.label_map", [1], "data.label_map: expected a mapping"),
    ],
)
def test_wrong_types(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(overrides={key: value})
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model.head", "gap-lin", "did you mean 'gap-linear'"),
        ("model.optimizer", "adma", "did you mean 'adam'"),
        ("data.balance", "downsampel", "did you mean 'downsample'"),
        ("trainer.mode", "maximum", "is not one of max, min"),
        ("explain.aopc.perturb", "noize", "did you mean 'noise'"),
        ("data.split", [0.8, 0.1], "must be 2 or 3 non-negative fractions summing to 1"),
        ("data.split", [0.9, 0.2, -0.1], "must be 2 or 3 non-negative fractions summing to 1"),
        ("data.split", [0.25] * 4, "must be 2 or 3 non-negative fractions summing to 1"),
        ("model.finetune", "last:0", "last:N with N >= 1"),
        ("model.finetune", "last:two", "last:N with N >= 1"),
        ("model.finetune", "partial", "use frozen, full, scratch or last:N"),
        ("data.other_labels", "drop", "data.other_labels=drop needs data.classes"),
        ("data.crop_margin", 0.5, "data.crop_margin=0.5 is out of range; it must be >= 0 and < 0.5"),
        ("data.batch_size", 0, "data.batch_size=0 is out of range; it must be >= 1"),
        ("data.image_size", 8, "data.image_size=8 is out of range; it must be >= 16"),
        ("explain.methods", "gradcam,lime", "explain.methods has 'lime'"),
        ("data.classes", "a,b,a", "data.classes has duplicates"),
    ],
)
def test_bad_values(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(overrides={key: value})
    assert message in str(e.value)
    assert str(e.value).startswith("config (with overrides): ")


def test_folds_checks() -> None:
    with pytest.raises(ConfigError, match="data.folds=1 is out of range; it must be >= 2"):
        load_config(overrides={"data.folds": 1})
    with pytest.raises(ConfigError, match=r"data.fold=4 must be in 0..3"):
        load_config(overrides={"data.folds": 4, "data.fold": 4})
    # With folds the holdout split is ignored, so a bad split no longer matters.
    cfg = load_config(overrides={"data.folds": 4, "data.fold": 3, "data.split": [0.5]})
    assert (cfg.data.folds, cfg.data.fold) == (4, 3)


def test_scratch_needs_no_weights() -> None:
    with pytest.raises(ConfigError, match="set model.weights: none"):
        load_config(overrides={"model.finetune": "scratch", "model.weights": "imagenet"})


def test_other_labels_drop_with_classes() -> None:
    cfg = load_config(overrides={"data.other_labels": "drop", "data.classes": "normal,covid"})
    assert cfg.data.classes == ["normal", "covid"]


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("data.split", "0.7,0.15,0.15", [0.7, 0.15, 0.15]),
        ("data.split", "[0.5, 0.5]", [0.5, 0.5]),
        ("data.classes", "normal, covid", ["normal", "covid"]),
        ("data.classes", "null", None),
        ("data.image_size", "None", None),
        ("data.image_size", "128", 128),
        (
            "data.label_map",
            "bacteria:pneumonia,virus:pneumonia",
            {"bacteria": "pneumonia", "virus": "pneumonia"},
        ),
        ("data.label_map", "{bacteria: pneumonia}", {"bacteria": "pneumonia"}),
        ("explain.methods", "gradcam,activation", ["gradcam", "activation"]),
        ("data.augment.hflip", "yes", True),
        ("data.verify_images", "0", False),
        ("model.lr", "1e-4", 1e-4),
        ("model.weight_decay", 1, 1.0),
        ("trainer.max_epochs", 3.0, 3),
        ("trainer.devices", 2, "2"),
        ("trainer.gradient_clip_val", "~", None),
    ],
)
def test_cli_string_parsing(key: str, text: str, expected: object) -> None:
    value = load_config(overrides={key: text})
    for part in key.split("."):
        value = getattr(value, part)
    assert value == expected
    assert type(value) is type(expected)


def test_flatten_and_iter_fields_agree() -> None:
    cfg = from_dict({"data": {"label_map": {"virus": "pneumonia"}}})
    flat = flatten(to_dict(cfg))
    # Maps flatten one level deeper (MLflow params are scalars); every other leaf is a flag.
    keys = [k for k, *_ in iter_fields() if k != "data.label_map"]
    assert [k for k in flat if not k.startswith("data.label_map")] == keys
    assert flat["data.label_map.virus"] == "pneumonia"
    assert flat["model.backbone"] == "resnet18"
    assert flat["explain.aopc.region"] == 34
    assert all(help_text for *_, help_text in iter_fields())  # every flag has --help text


def test_split_official_is_the_official_split() -> None:
    cfg = load_config(overrides={"data.split": "official"})
    assert cfg.data.official_split is True and cfg.data.split == [0.8, 0.1, 0.1]
