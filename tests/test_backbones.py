"""Backbone registry and heads: every backbone builds and classifies; weights=PATH loads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from cxrlab.config import ModelConfig
from cxrlab.lightning_modules.backbones import (
    backbone_names,
    build_backbone,
    check_backbone_name,
    default_input_size,
)
from cxrlab.lightning_modules.classifier import CXRClassifier
from cxrlab.lightning_modules.heads import build_head

CLASSES = ["covid", "normal", "pneumonia"]
# inception_v3's stem needs >= 75 px; every other registry backbone runs at 64.
SIZES = {"inception_v3": 80}


@pytest.fixture(scope="module", params=backbone_names())
def registry_model(request: pytest.FixtureRequest, make_config: Callable) -> CXRClassifier:
    """Each registry backbone built once (weights none, gap-linear) inside a CXRClassifier."""
    torch.manual_seed(0)
    size = SIZES.get(request.param, 64)
    cfg = make_config({"model.backbone": request.param, "data.image_size": size})
    return CXRClassifier(cfg, CLASSES)


def test_registry_lists_the_design_backbones() -> None:
    assert set(backbone_names()) == {
        "vgg16",
        "vgg19",
        "densenet121",
        "densenet201",
        "resnet18",
        "resnet50",
        "resnet101",
        "inception_v3",
        "efficientnet_b0",
        "mobilenet_v3_large",
    }


def test_forward_gives_class_logits(registry_model: CXRClassifier) -> None:
    s = registry_model.input_size
    x = torch.rand(2, 1, s, s)
    with torch.no_grad():
        eval_out = registry_model.eval()(x)
        # Images in [0, 1] with one or three channels are the same input to the model.
        torch.testing.assert_close(registry_model(x.expand(-1, 3, -1, -1)), eval_out)
        # Train mode too: inception's auxiliary output must not leak into the logits.
        train_out = registry_model.train()(x)
    registry_model.eval()
    assert eval_out.shape == train_out.shape == (2, len(CLASSES))
    assert torch.isfinite(eval_out).all() and torch.isfinite(train_out).all()


def test_target_layer_feeds_the_head(registry_model: CXRClassifier) -> None:
    layer = registry_model.get_submodule(registry_model.target_layer)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o))
    s = registry_model.input_size
    with torch.no_grad():
        registry_model.eval()(torch.rand(1, 1, s, s))
    handle.remove()
    linear = registry_model.head[-1]
    # The Grad-CAM layer is the last feature map: [1, channels the head reads, h, w].
    assert len(seen) == 1 and seen[0].ndim == 4
    assert seen[0].shape[:2] == (1, linear.in_features)


def test_default_input_sizes() -> None:
    assert default_input_size("inception_v3") == 299
    assert default_input_size("resnet18") == 224
    assert default_input_size("timm:resnet10t") == 176  # timm's pretrained_cfg


def test_timm_backbone(make_config: Callable) -> None:
    cfg = make_config({"model.backbone": "timm:resnet10t"})
    model = CXRClassifier(cfg, CLASSES).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 1, 64, 64))
    assert out.shape == (3, 3)
    assert model.target_layer == "backbone"
    assert model.get_submodule(model.target_layer) is model.backbone
    assert model.head[-1].in_features == 512


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("resnet19", "unknown backbone 'resnet19' (did you mean 'resnet18'?)"),
        ("vgg-16", "did you mean 'vgg16'"),
        ("timm:", "unknown backbone 'timm:'"),
    ],
)
def test_unknown_backbone_suggests(name: str, message: str) -> None:
    with pytest.raises(ValueError, match="model.backbone") as e:
        check_backbone_name(name)
    assert message in str(e.value)
    assert "timm:<any timm model name>" in str(e.value)


def test_unknown_timm_model_suggests() -> None:
    with pytest.raises(ValueError, match=r"timm has no model 'resnet10tt'.*resnet10t"):
        build_backbone("timm:resnet10tt")


def test_heads_shapes() -> None:
    feats = torch.rand(2, 32, 9, 13)
    gap = build_head(ModelConfig(head="gap-linear"), 32, 4)
    mlp = build_head(ModelConfig(head="gap-mlp", hidden=16), 32, 4)
    # maxpool-mlp: 9x13 pooled by 4 -> 2x3 cells of 32 channels = 192 inputs to the hidden layer.
    mp = build_head(ModelConfig(head="maxpool-mlp", hidden=16, pool=4), 32, 4, feature_hw=(9, 13))
    assert mp[2].in_features == 32 * 2 * 3 and mp[2].out_features == 16
    assert mlp[2].in_features == 32 and mlp[-1].in_features == 16
    for head in (gap, mlp, mp):
        assert head(feats).shape == (2, 4)


def test_head_errors() -> None:
    with pytest.raises(ValueError, match="needs the feature-map size"):
        build_head(ModelConfig(head="maxpool-mlp"), 8, 2)
    with pytest.raises(ValueError, match="model.pool=4 is larger than the 3x3 feature map"):
        build_head(ModelConfig(head="maxpool-mlp", pool=4), 8, 2, feature_hw=(3, 3))
    with pytest.raises(ValueError, match="model.head='gap'"):
        build_head(ModelConfig(head="gap"), 8, 2)


def test_maxpool_mlp_in_classifier(make_config: Callable) -> None:
    # resnet18 at 128 px: layer4 is 4x4; pool 2 -> 2x2 x 512 channels = 2048 flat features.
    cfg = make_config(
        {"data.image_size": 128, "model.head": "maxpool-mlp", "model.pool": 2, "model.hidden": 64}
    )
    model = CXRClassifier(cfg, CLASSES).eval()
    assert model.head[2].in_features == 2048
    with torch.no_grad():
        assert model(torch.rand(2, 1, 128, 128)).shape == (2, 3)
    cfg.model.pool = 8
    with pytest.raises(ValueError, match="lower model.pool or raise data.image_size"):
        CXRClassifier(cfg, CLASSES)


# --------------------------------------------------------------------------- weights=PATH


def assert_same_weights(
    module: nn.Module, state: dict[str, torch.Tensor], prefix: str = ""
) -> None:
    """Every tensor of `module` equals state[prefix + name]."""
    own = module.state_dict()
    for name, tensor in own.items():
        torch.testing.assert_close(tensor, state[prefix + name], rtol=0, atol=0, msg=name)


def save(obj: Any, path: Path) -> str:
    torch.save(obj, path)
    return str(path)


def test_weights_from_cxrlab_checkpoint(tmp_path: Path, make_config: Callable) -> None:
    torch.manual_seed(1)
    trained = CXRClassifier(make_config(), CLASSES)
    state = trained.state_dict()
    path = save({"state_dict": state, "hyper_parameters": {}}, tmp_path / "run.ckpt")
    torch.manual_seed(2)  # a different init, so equality below proves loading
    bb = build_backbone("resnet18", path)
    assert_same_weights(bb.features, state, "backbone.")
    # The same through the config: only the backbone comes from the file, the head is new.
    model = CXRClassifier(make_config({"model.weights": path}), CLASSES)
    assert_same_weights(model.backbone, state, "backbone.")


def test_weights_from_torchvision_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(3)
    tv = torchvision.models.resnet18()
    path = save(tv.state_dict(), tmp_path / "resnet18.pth")
    torch.manual_seed(4)
    bb = build_backbone("resnet18", path)
    feats = bb.features
    torch.testing.assert_close(feats.stem[0].weight, tv.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(feats.stem[1].running_var, tv.bn1.running_var, rtol=0, atol=0)
    for i in range(1, 5):
        assert_same_weights(getattr(feats, f"layer{i}"), tv.state_dict(), f"layer{i}.")


def test_weights_from_other_architecture_fail(tmp_path: Path) -> None:
    path = save(torchvision.models.mobilenet_v3_small().state_dict(), tmp_path / "mnet.pth")
    with pytest.raises(ValueError, match=r"model.weights: no tensor in .*mnet.pth matches"):
        build_backbone("resnet18", path)


def test_weights_from_bigger_sibling_fail(tmp_path: Path) -> None:
    """A resnet50 state dict shares only the stem's shapes with resnet18: loading must not
    silently keep random layer1..layer4 weights."""
    path = save(torchvision.models.resnet50().state_dict(), tmp_path / "resnet50.pth")
    with pytest.raises(ValueError, match="resnet50.pth"):
        build_backbone("resnet18", path)


def test_cxrlab_checkpoint_of_other_backbone_fails(tmp_path: Path, make_config: Callable) -> None:
    state = CXRClassifier(make_config(), CLASSES).state_dict()
    path = save({"state_dict": state}, tmp_path / "r18.ckpt")
    with pytest.raises(ValueError, match=r"r18.ckpt lacks \d+ of this backbone's tensors"):
        build_backbone("resnet50", path)


def test_weights_path_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing.pth does not exist"):
        build_backbone("resnet18", str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pth is not a loadable PyTorch weights file"):
        build_backbone("resnet18", str(tmp_path / "junk.pth"))
    path = save({"epoch": 3}, tmp_path / "nostate.pth")
    with pytest.raises(ValueError, match="nostate.pth holds no state dict of tensors"):
        build_backbone("resnet18", path)
