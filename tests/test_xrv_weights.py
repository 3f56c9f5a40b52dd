"""torchxrayvision DenseNet-121 weights: `cxrlab models import`, then model.weights loads them.

torchxrayvision itself is not installed here: its models are stood in for by modules with its key
names and shapes (torchvision's densenet121 with a 1-channel conv0, an 18-output classifier and an
op_threshs buffer), and, for its pickled release files, by a fake `torchxrayvision` package.
"""

from __future__ import annotations

import contextlib
import fractions
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from cxrlab.config import to_dict
from cxrlab.experiments.cli.main import build_parser, main
from cxrlab.lightning_modules.checkpoint import load_classifier
from cxrlab.lightning_modules.classifier import CXRClassifier
from cxrlab.lightning_modules.xrv_weights import FORMAT, backbone_for

CLASSES = ["covid", "normal", "pneumonia"]
PATHOLOGIES = [f"finding{i}" for i in range(18)]
SIZE = 64  # densenet121 runs at 64 px; the weights' own 224 is not needed to check them


def _randomise(model: nn.Module) -> nn.Module:
    """Random weights and BatchNorm statistics, so that every tensor matters to the output."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.03, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
    return model.eval()


def xrv_like() -> nn.Module:
    """A module with torchxrayvision DenseNet's key names and shapes, random weights."""
    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None)
    model.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.classifier = nn.Linear(1024, 18)
    model.register_buffer("op_threshs", torch.rand(18))
    return _randomise(model)


@pytest.fixture(scope="module")
def original() -> nn.Module:
    return xrv_like()


@pytest.fixture(scope="module")
def state_file(original: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("xrv") / "xrv_state.pt"
    torch.save(original.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def converted(state_file: Path) -> Path:
    out = state_file.with_name("xrv_converted.pt")
    assert main(["models", "import", str(state_file), "--out", str(out), "--pathologies", ",".join(PATHOLOGIES)]) == 0
    return out


@pytest.fixture(scope="module")
def xrv_model(converted: Path, make_config: Callable) -> CXRClassifier:
    cfg = make_config({"model.backbone": "densenet121", "model.weights": str(converted), "data.image_size": SIZE})
    return CXRClassifier(cfg, CLASSES).eval()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["models", "import", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------------- the converted file


def test_converted_file_is_plain_data(converted: Path, original: nn.Module) -> None:
    data = torch.load(converted, map_location="cpu", weights_only=True)
    assert data["format"] == FORMAT and data["arch"] == "densenet121"
    assert data["channels"] == 1 and data["input_scale"] == [-1024.0, 1024.0] and data["input_size"] == 224
    assert data["pathologies"] == PATHOLOGIES
    torch.testing.assert_close(data["op_threshs"], original.op_threshs)
    want = {k: v for k, v in original.state_dict().items() if k != "op_threshs"}
    assert set(data["state_dict"]) == set(want)  # features.* and the classifier, kept beside them
    for key, value in want.items():
        assert torch.equal(data["state_dict"][key], value), key


def test_import_prints_what_it_wrote(state_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nested" / "w.pt"
    code, text, err = run_cli(capsys, str(state_file), "--out", str(out))
    assert code == 0 and err == "" and out.is_file()
    assert "1-channel input scaled to [-1024, 1024] at 224 px" in text
    assert "pathology names are unknown; pass --pathologies" in text  # a bare state dict has none
    assert f"--model.backbone densenet121 --model.weights {out}" in text


def test_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "import", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("FILE", "--out OUT", "--arch", "--pathologies NAMES", "--trust_pickle", "[-1024, 1024]", "weights_only"):
        assert flag in text, flag
    models = next(a for a in build_parser()._actions if a.dest == "command").choices["models"]
    imp = next(a for a in models._actions if a.dest == "models_command").choices["import"]
    assert all(a.help for a in imp._actions)


def test_models_alone_still_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    assert "densenet121" in capsys.readouterr().out


# --------------------------------------------------------------------------- model.weights: the converted file


def test_features_equal_torchxrayvision_on_its_scale(xrv_model: CXRClassifier, original: nn.Module) -> None:
    """cxrlab's model fed [0, 1] images gives the feature maps the original gives for x * 2048 - 1024
    (torchxrayvision applies a ReLU after `features`, as cxrlab's last block does)."""
    assert xrv_model.backbone.stem[0].weight.shape == (64, 1, 7, 7)
    assert torch.equal(xrv_model.backbone.stem[0].weight, original.features.conv0.weight)
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        want = torch.relu(original.features(x * 2048 - 1024))
        got = xrv_model.backbone(xrv_model.preprocess(x))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1.3e-6)
        # Three equal channels are averaged to one (float rounding of the mean aside).
        torch.testing.assert_close(xrv_model.backbone(xrv_model.preprocess(x.expand(-1, 3, -1, -1))), want, atol=1e-2, rtol=1e-4)
        assert xrv_model(x).shape == (2, len(CLASSES))  # the head is cxrlab's, for the run's classes


def test_logits_equal_the_original_module_with_its_classifier_as_head(
    converted: Path, original: nn.Module, make_config: Callable
) -> None:
    """With the file's own classifier copied into a gap-linear head over its 18 pathologies, cxrlab's
    model gives torchxrayvision's logits (its forward: features, ReLU, average pool, classifier)."""
    cfg = make_config({"model.backbone": "densenet121", "model.weights": str(converted), "data.image_size": SIZE})
    model = CXRClassifier(cfg, PATHOLOGIES).eval()
    state = torch.load(converted, map_location="cpu", weights_only=True)["state_dict"]
    model.head[-1].load_state_dict({"weight": state["classifier.weight"], "bias": state["classifier.bias"]})
    x = torch.rand(3, 1, SIZE, SIZE)
    with torch.no_grad():
        features = torch.relu(original.features(x * 2048 - 1024))
        want = original.classifier(torch.nn.functional.adaptive_avg_pool2d(features, 1).flatten(1))
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)


def test_checkpoint_rebuilds_without_the_weights_file(
    xrv_model: CXRClassifier, converted: Path, tmp_path: Path
) -> None:
    """load_classifier rebuilds with model.weights none: the checkpoint carries the 1-channel stem
    and the [-1024, 1024] scale."""
    assert set(xrv_model.state_dict()) >= {"mean", "std"}
    ckpt = tmp_path / "xrv.ckpt"
    hp = {"config": to_dict(xrv_model.config), "classes": CLASSES, "class_weights": None}
    torch.save({"state_dict": xrv_model.state_dict(), "hyper_parameters": hp}, ckpt)
    rebuilt = load_classifier(ckpt)
    assert rebuilt.mean.shape == (1, 1, 1, 1) and rebuilt.backbone.stem[0].in_channels == 1
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), xrv_model(x))


def test_imagenet_models_keep_their_state_dict(make_config: Callable) -> None:
    model = CXRClassifier(make_config({"model.backbone": "resnet18"}), CLASSES)
    assert "mean" not in model.state_dict() and model.mean.shape == (1, 3, 1, 1)


def test_converted_file_with_a_wrong_key_fails_in_one_line(converted: Path, tmp_path: Path) -> None:
    data = torch.load(converted, map_location="cpu", weights_only=True)
    state = data["state_dict"]
    state["features.norm6.weight"] = state.pop("features.norm5.weight")
    bad = tmp_path / "bad.pt"
    torch.save(data, bad)
    with pytest.raises(ValueError) as e:
        backbone_for("densenet121", str(bad))
    assert "\n" not in str(e.value)
    assert str(e.value) == (
        f"model.weights: {bad}: no tensor features.norm5.weight, which torchxrayvision's densenet121 has; "
        "is it a densenet121?"
    )


def test_converted_file_needs_densenet121(converted: Path) -> None:
    with pytest.raises(ValueError, match=r"holds torchxrayvision densenet121 weights; set model.backbone: densenet121 \(got 'resnet18'\)"):
        backbone_for("resnet18", str(converted))


# --------------------------------------------------------------------------- bad inputs: one clear line


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("rename", "tensor features.norm9.weight is not in torchxrayvision's densenet121"),
        ("drop", "no tensor features.denseblock4.denselayer16.conv2.weight, which torchxrayvision's densenet121 has"),
        ("rgb", "tensor features.conv0.weight has shape [64, 3, 7, 7], torchxrayvision's densenet121 has [64, 1, 7, 7]"),
    ],
)
def test_mismatched_state_dict_fails_in_one_line(
    change: str, message: str, original: nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = dict(original.state_dict())
    if change == "rename":
        state["features.norm9.weight"] = state.pop("features.norm5.bias")
        state["features.norm5.bias"] = state["features.norm9.weight"]
    elif change == "drop":
        del state["features.denseblock4.denselayer16.conv2.weight"]
    else:
        state["features.conv0.weight"] = state["features.conv0.weight"].repeat(1, 3, 1, 1)
    src = tmp_path / "odd.pt"
    torch.save(state, src)
    code, out, err = run_cli(capsys, str(src), "--out", str(tmp_path / "o.pt"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("cxrlab: error: ") and message in err
    assert not (tmp_path / "o.pt").exists()


def test_other_bad_inputs(state_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, str(tmp_path / "absent.pt"), "--out", str(tmp_path / "o.pt"))
    assert code == 2 and "absent.pt does not exist" in err
    junk = tmp_path / "junk.pt"
    junk.write_text("not torch")
    code, _, err = run_cli(capsys, str(junk), "--out", str(tmp_path / "o.pt"))
    assert code == 2 and "junk.pt is not a readable PyTorch file" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, str(state_file), "--out", str(tmp_path / "o.pt"), "--pathologies", "a,b")
    assert code == 2 and "2 pathology names for a classifier with 18 outputs; fix --pathologies" in err
    code, _, err = run_cli(capsys, str(state_file), "--out", str(state_file))
    assert code == 2 and "is the input file" in err


# --------------------------------------------------------------------------- pickled models (torchxrayvision's releases)

FAKE_MODELS = '''
"""A stand-in for torchxrayvision.models: its class names, torchvision's layers."""
from torch import nn
from torchvision.models import densenet as tv


class _DenseLayer(tv._DenseLayer):
    pass


class _DenseBlock(tv._DenseBlock):
    pass


class _Transition(tv._Transition):
    pass


class DenseNet(tv.DenseNet):
    def __init__(self):
        super().__init__(num_classes=18)
        self.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        for m in self.modules():
            for cls in (_DenseLayer, _DenseBlock, _Transition):
                if type(m) is cls.__bases__[0]:
                    m.__class__ = cls


LABELS = ["p%d" % i for i in range(18)]
model_urls = {
    "fake": {"weights_url": "https://example.org/v1/fake-densenet121-best.pt", "labels": LABELS,
             "op_threshs": [0.5] * 18},
}
model_urls["densenet121-res224-fake"] = model_urls["fake"]
'''


@contextlib.contextmanager
def fake_xrv(root: Path) -> Iterator[Any]:
    """A `torchxrayvision` package importable inside the block, gone after it."""
    pkg = root / "fakexrv" / "torchxrayvision"
    if not pkg.is_dir():
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("from . import models\n")
        (pkg / "models.py").write_text(textwrap.dedent(FAKE_MODELS))
    sys.path.insert(0, str(pkg.parent))
    try:
        import torchxrayvision.models

        yield torchxrayvision.models
    finally:
        sys.path.remove(str(pkg.parent))
        for name in [n for n in sys.modules if n == "torchxrayvision" or n.startswith("torchxrayvision.")]:
            del sys.modules[name]


def pickled_model(original: nn.Module, root: Path, name: str, zipfile: bool = True, **attrs: Any) -> Path:
    """torch.save(model) of a torchxrayvision-named DenseNet holding `original`'s weights (in the
    legacy non-zip format of torch < 1.6, as torchxrayvision's release files may be, unless zipfile)."""
    with fake_xrv(root) as xrv:
        model = xrv.DenseNet()
        state = {k: v for k, v in original.state_dict().items() if k != "op_threshs"}
        model.load_state_dict(state)
        for key, value in attrs.items():
            setattr(model, key, value)
        path = root / name
        torch.save(model.eval(), path, _use_new_zipfile_serialization=zipfile)
    return path


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_pickled_model_reads_without_running_code_or_torchxrayvision(
    zipfile: bool, original: nn.Module, converted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = pickled_model(original, tmp_path, "release.pt", zipfile, pathologies=PATHOLOGIES)
    with pytest.raises(ModuleNotFoundError):
        __import__("torchxrayvision")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(src, weights_only=True)  # a whole pickled model, as torchxrayvision's are
    out = tmp_path / "w.pt"
    code, _, err = run_cli(capsys, str(src), "--out", str(out))
    assert code == 0 and err == ""  # no warning: nothing from the file ran
    data = torch.load(out, weights_only=True)
    assert data["pathologies"] == PATHOLOGIES and data["op_threshs"] is None
    reference = torch.load(converted, weights_only=True)["state_dict"]
    assert set(data["state_dict"]) == set(reference)
    assert all(torch.equal(data["state_dict"][k], v) for k, v in reference.items())


def test_pickle_with_other_code_needs_trust_and_torchxrayvision(
    original: nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Any class beyond DenseNet's layers (here fractions.Fraction) could be code: never run unasked.
    src = pickled_model(original, tmp_path, "fake-densenet121-best.pt", extra=fractions.Fraction(1, 3))
    out = tmp_path / "w.pt"
    code, _, err = run_cli(capsys, str(src), "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and "(it needs fractions.Fraction)" in err and "rerun with --trust_pickle" in err
    code, _, err = run_cli(capsys, str(src), "--out", str(out), "--trust_pickle")
    assert code == 2 and err.count("\n") == 1 and "needs torchxrayvision (its classes): pip install torchxrayvision" in err
    assert not out.exists()
    with fake_xrv(tmp_path):
        code, text, err = run_cli(capsys, str(src), "--out", str(out), "--trust_pickle")
    assert code == 0
    assert err.count("\n") == 1 and err.startswith("warning: ") and "runs the code in its pickle" in err
    data = torch.load(out, weights_only=True)
    # torchxrayvision's table names its own release file's outputs and thresholds.
    assert data["name"] == "densenet121-res224-fake" and data["pathologies"] == [f"p{i}" for i in range(18)]
    torch.testing.assert_close(data["op_threshs"], torch.full((18,), 0.5))
    assert "densenet121-res224-fake" in text
