"""Fine-tuning policies train exactly the intended parameters; frozen BatchNorm stays frozen."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn

from cxrlab.lightning_modules.backbones import Backbone, build_backbone
from cxrlab.lightning_modules.classifier import CXRClassifier
from cxrlab.lightning_modules.finetune import apply_finetune, trainable_from

CLASSES = ["covid", "normal", "pneumonia"]
# VGG16's block5: three 3x3 convs 512 -> 512 with biases.
VGG16_BLOCK5 = 3 * (512 * 512 * 9 + 512)


@pytest.fixture(scope="module")
def backbones() -> Callable[[str], Backbone]:
    """Each backbone built once per module; policies are re-applied to the same modules."""
    cache: dict[str, Backbone] = {}

    def get(name: str) -> Backbone:
        if name not in cache:
            cache[name] = build_backbone(name, "none")
        return cache[name]

    return get


def numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def trainable(module: nn.Module) -> dict[str, int]:
    return {n: p.numel() for n, p in module.named_parameters() if p.requires_grad}


def test_resnet18_last1_is_exactly_layer4(backbones: Callable) -> None:
    bb = backbones("resnet18")
    apply_finetune(bb.features, bb.blocks, "last:1")
    names = set(trainable(bb.features))
    expected = {n for n, _ in bb.features.named_parameters() if n.startswith("layer4.")}
    assert names == expected
    assert sum(trainable(bb.features).values()) == numel(torchvision.models.resnet18().layer4)


def test_vgg16_last1_is_block5_convs(backbones: Callable) -> None:
    bb = backbones("vgg16")
    apply_finetune(bb.features, bb.blocks, "last:1")
    got = trainable(bb.features)
    assert sum(got.values()) == VGG16_BLOCK5
    assert len(got) == 6 and all(n.startswith("block5.") for n in got)


def test_densenet121_last2(backbones: Callable) -> None:
    bb = backbones("densenet121")
    apply_finetune(bb.features, bb.blocks, "last:2")
    f = torchvision.models.densenet121().features
    # block3 = denseblock3 + transition3; block4 = denseblock4 + norm5.
    expected = sum(numel(m) for m in (f.denseblock3, f.transition3, f.denseblock4, f.norm5))
    assert sum(trainable(bb.features).values()) == expected
    assert {n.split(".")[0] for n in trainable(bb.features)} == {"block3", "block4"}


def test_efficientnet_b0_last3(backbones: Callable) -> None:
    bb = backbones("efficientnet_b0")
    apply_finetune(bb.features, bb.blocks, "last:3")
    expected = numel(torchvision.models.efficientnet_b0().features[6:])
    assert sum(trainable(bb.features).values()) == expected


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "timm:resnet10t"])
@pytest.mark.parametrize("policy", ["full", "scratch"])
def test_full_and_scratch_train_everything(backbones: Callable, name: str, policy: str) -> None:
    bb = backbones(name)
    norms = apply_finetune(bb.features, bb.blocks, policy)
    n_trainable, n_all = sum(trainable(bb.features).values()), numel(bb.features)
    assert n_trainable == n_all
    assert norms == []


@pytest.mark.parametrize("name", ["resnet18", "timm:resnet10t"])
def test_frozen_trains_nothing(backbones: Callable, name: str) -> None:
    bb = backbones(name)
    norms = apply_finetune(bb.features, bb.blocks, "frozen")
    assert trainable(bb.features) == {}
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in bb.features.modules())
    assert len(norms) == n_bn > 0


def test_last_n_covering_every_block_is_full(backbones: Callable) -> None:
    bb = backbones("resnet18")
    apply_finetune(bb.features, bb.blocks, f"last:{len(bb.blocks)}")
    assert sum(trainable(bb.features).values()) == numel(bb.features)


def test_last_n_beyond_blocks_errors() -> None:
    blocks = ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert trainable_from("last:2", blocks) == "layer3"
    assert trainable_from("frozen", blocks) is None
    with pytest.raises(ValueError, match=r"last:6.*only 5 blocks.*use last:1..last:5 or full"):
        trainable_from("last:6", blocks)


# --------------------------------------------------------------------------- in the classifier


def resnet18_model(make_config: Callable, **model: object) -> CXRClassifier:
    torch.manual_seed(0)
    return CXRClassifier(make_config({f"model.{k}": v for k, v in model.items()}), CLASSES)


def bn_layers(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_head_always_trains(make_config: Callable) -> None:
    model = resnet18_model(make_config, finetune="frozen")
    assert all(p.requires_grad for p in model.head.parameters())
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_frozen_batchnorm_stays_frozen_in_a_training_step(make_config: Callable) -> None:
    model = resnet18_model(make_config, finetune="last:1", lr=0.1)
    frozen, live = bn_layers(model.backbone[:4]), bn_layers(model.backbone.layer4)
    assert (len(frozen), len(live)) == (15, 5)  # resnet18: 1 stem + 4 + 5 + 5 | 5 in layer4
    model.train()
    assert not any(m.training for m in frozen)
    assert all(m.training for m in live)
    before = {id(m): (m.running_mean.clone(), m.weight.clone()) for m in frozen + live}
    conv_before = model.backbone.stem[0].weight.clone()
    opt = model.configure_optimizers()
    x, y = torch.rand(4, 1, 64, 64), torch.tensor([0, 1, 2, 0])
    model._loss(model(x), y).backward()
    opt.step()
    for m in frozen:
        mean, weight = before[id(m)]
        assert torch.equal(m.running_mean, mean) and torch.equal(m.weight, weight)
    for m in live:
        mean, weight = before[id(m)]
        assert not torch.equal(m.running_mean, mean) and not torch.equal(m.weight, weight)
    assert torch.equal(model.backbone.stem[0].weight, conv_before)
    assert model.backbone.stem[0].weight.grad is None


def test_eval_then_train_roundtrip_keeps_frozen_norms(make_config: Callable) -> None:
    model = resnet18_model(make_config, finetune="frozen")
    model.eval().train()
    assert not any(m.training for m in bn_layers(model.backbone))
    assert model.head.training


@pytest.mark.parametrize(
    ("finetune", "mult", "backbone_lr"),
    [("last:1", 0.1, 1e-4), ("full", 0.5, 5e-4), ("scratch", 0.1, 1e-3)],
)
def test_param_groups_use_backbone_lr_mult(
    make_config: Callable, finetune: str, mult: float, backbone_lr: float
) -> None:
    model = resnet18_model(make_config, finetune=finetune, backbone_lr_mult=mult, lr=1e-3)
    opt = model.configure_optimizers()
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["head"]["lr"] == pytest.approx(1e-3)
    assert groups["backbone"]["lr"] == pytest.approx(backbone_lr)  # scratch ignores the mult
    want = {id(p) for p in model.backbone.parameters() if p.requires_grad}
    assert {id(p) for p in groups["backbone"]["params"]} == want
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in model.head.parameters()}


def test_frozen_has_only_the_head_group(make_config: Callable) -> None:
    opt = resnet18_model(make_config, finetune="frozen").configure_optimizers()
    assert [g["name"] for g in opt.param_groups] == ["head"]


@pytest.mark.parametrize(
    ("name", "cls", "extra"),
    [
        ("adam", torch.optim.Adam, {}),
        ("adamw", torch.optim.AdamW, {}),
        ("rmsprop", torch.optim.RMSprop, {"momentum": 0.9}),
        ("sgd", torch.optim.SGD, {"momentum": 0.9}),
    ],
)
def test_optimizers(make_config: Callable, name: str, cls: type, extra: dict) -> None:
    opt = resnet18_model(make_config, optimizer=name, weight_decay=0.01).configure_optimizers()
    assert type(opt) is cls
    assert opt.param_groups[0]["weight_decay"] == 0.01
    for k, v in extra.items():
        assert opt.param_groups[0][k] == v


def test_schedulers(make_config: Callable) -> None:
    cosine = resnet18_model(make_config, scheduler="cosine").configure_optimizers()
    assert isinstance(cosine["lr_scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    plateau = resnet18_model(make_config, scheduler="plateau").configure_optimizers()
    assert plateau["lr_scheduler"]["monitor"] == "val/macro_f1"  # trainer.monitor auto, read for the task
    multilabel = CXRClassifier(make_config({"model.scheduler": "plateau", "data.task": "multilabel"}), CLASSES)
    assert multilabel.configure_optimizers()["lr_scheduler"]["monitor"] == "val/macro_auroc"


def test_a_non_finite_training_loss_stops_training(make_config: Callable) -> None:
    """On the CPU the loss is read every step; a flag still set at the epoch's end (an accelerator's
    steps between reads) stops training there."""
    model = resnet18_model(make_config)
    model._check_finite(torch.tensor(0.5))
    with pytest.raises(FloatingPointError, match=r"non-finite training loss by step 0 \(last loss nan\)"):
        model._check_finite(torch.tensor(float("nan")))
    model = resnet18_model(make_config)
    model._check_finite(torch.tensor(0.5))
    model.on_train_epoch_end()  # a finite epoch ends, and its flag is cleared
    assert model._nonfinite is None
    model._nonfinite = torch.tensor(True)
    with pytest.raises(FloatingPointError, match="non-finite training loss in epoch 0"):
        model.on_train_epoch_end()
