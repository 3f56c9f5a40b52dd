"""Bad input from the command line: one line naming the key or file and the fix, and no MLflow
run (nor store) left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrlab.experiments.cli.main import main

Capture = pytest.CaptureFixture[str]


def one_error_line(capsys: Capture) -> str:
    """stderr holds exactly one line, the `cxrlab...: error:` line."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: " in err[0], err
    return err[0]


def train(*args: str) -> int:
    return main(["train", "--config", "ci_tiny", "--data.num_workers", "0", *args])


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--trainer.max_epochs", "-1", "trainer.max_epochs=-1 is out of range; it must be >= 1"),
        ("--trainer.patience", "-2", "trainer.patience=-2 is out of range; it must be >= 1"),
        ("--model.lr", "-0.5", "model.lr=-0.5 is out of range; it must be > 0"),
        ("--data.num_workers", "-1", "data.num_workers=-1 is out of range; it must be >= 0"),
        ("--explain.probe_per_class", "-3", "explain.probe_per_class=-3 is out of range; it must be >= 1"),
        ("--model.dropout", "1.5", "model.dropout=1.5 is out of range; it must be >= 0 and < 1"),
    ],
)
def test_out_of_range_values_stop_before_any_run(
    in_tmp_cwd: Path, folder_tree: Path, capsys: Capture, flag: str, value: str, expected: str
) -> None:
    assert train("--data.root", str(folder_tree), flag, value) == 2
    assert expected in one_error_line(capsys)
    assert not (in_tmp_cwd / "mlruns").exists()


def test_cross_field_checks_name_the_keys(in_tmp_cwd: Path, folder_tree: Path, capsys: Capture) -> None:
    root = ["--data.root", str(folder_tree)]
    assert train(*root, "--data.image_size", "96", "--explain.aopc.region", "34", "--explain.aopc.steps", "10") == 2
    assert "explain.aopc.steps=10 exceeds the 9 regions of 34 px on a 96 px input" in one_error_line(capsys)
    assert train(*root, "--model.head", "maxpool-mlp", "--model.pool", "4") == 2
    assert "model.pool=4 is larger than the 1x1 feature map of resnet18 at 32 px" in one_error_line(capsys)
    assert train(*root, "--model.backbone", "inception_v3") == 2
    assert "data.image_size=32 is too small for model.backbone='inception_v3'" in one_error_line(capsys)
    assert train(*root, "--trainer.monitor", "train/loss") == 2
    assert "trainer.monitor='train/loss' is not a validation metric" in one_error_line(capsys)
    assert not (in_tmp_cwd / "mlruns").exists()


def test_invalid_yaml_is_one_line(in_tmp_cwd: Path, capsys: Capture) -> None:
    path = in_tmp_cwd / "broken.yaml"
    path.write_text("data:\n  root: x\n  batch_size: 3: 4\n")
    assert main(["train", "--config", str(path)]) == 2
    line = one_error_line(capsys)
    assert line == (
        f"cxrlab: error: {path}: not valid YAML at line 3, column 16 "
        "(mapping values are not allowed here); fix the syntax there"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--model.backbon", "vgg16"], "cxrlab train: error: unrecognized argument --model.backbon; did you mean --model.backbone?"),
        (["data", "phantom", "out", "--n_per_clas", "3"], "cxrlab data phantom: error: unrecognized argument --n_per_clas; did you mean --n_per_class?"),
        (["train", "--zzz"], "cxrlab train: error: unrecognized argument --zzz; see cxrlab train --help"),
    ],
)
def test_unknown_flag_suggests_the_closest(capsys: Capture, argv: list[str], expected: str) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert one_error_line(capsys) == expected


@pytest.mark.parametrize(
    "argv",
    [["evaluate", "{ckpt}"], ["predict", "{ckpt}", "{dir}"], ["explain", "{ckpt}"], ["train", "--resume", "{ckpt}"]],
)
def test_zero_byte_checkpoint(in_tmp_cwd: Path, capsys: Capture, argv: list[str]) -> None:
    """A save cut short by a crash leaves an empty .ckpt: every command that reads one says so."""
    ckpt = in_tmp_cwd / "last.ckpt"
    ckpt.touch()
    args = [a.format(ckpt=ckpt, dir=in_tmp_cwd) for a in argv]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert f"{ckpt}: checkpoint is empty (0 bytes)" in line and "use another .ckpt" in line
    assert not (in_tmp_cwd / "mlruns").exists()


def test_finetune_deeper_than_the_backbone(in_tmp_cwd: Path, folder_tree: Path, capsys: Capture) -> None:
    assert train("--data.root", str(folder_tree), "--model.finetune", "last:9") == 2
    assert "model.finetune='last:9' but resnet18 has 5 blocks (stem, layer1, layer2, layer3, layer4)" in one_error_line(capsys)


@pytest.mark.parametrize(
    "argv",
    [["train", "--config", "ci_tiny", "--data.root", "{root}"], ["data", "inspect", "--data.root", "{root}"]],
)
def test_unknown_source_suggests_the_closest(
    in_tmp_cwd: Path, folder_tree: Path, capsys: Capture, argv: list[str]
) -> None:
    """The source registry, not the config schema, knows the names; both paths still say it in one line."""
    assert main([a.format(root=folder_tree) for a in argv] + ["--data.source", "kermanny"]) == 2
    line = one_error_line(capsys)
    assert "data.source='kermanny' is not one of auto, csv" in line and "(did you mean 'kermany'?)" in line
    assert not (in_tmp_cwd / "mlruns").exists()
