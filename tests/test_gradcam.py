"""Grad-CAM, Grad-CAM++, activation maps: pytorch-grad-cam parity, exact cases, side effects."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from cxrlab.callbacks.explanations.display import minmax, upsample
from cxrlab.callbacks.explanations.gradcam import (
    activation_map,
    grad_cam,
    grad_cam_pp,
    resolve_layer,
)

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

NUM_CLASSES = 3


class Scaled(nn.Module):
    """Multiplies a classifier's logits by a constant."""

    def __init__(self, net: nn.Module, scale: float) -> None:
        super().__init__()
        self.net = net
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) * self.scale


class Readout(nn.Module):
    """Feature layer then a fixed linear readout: logit_k = sum(weight[k] * features)."""

    def __init__(self, features: nn.Module, weight: Tensor) -> None:
        super().__init__()
        self.features = features
        self.register_buffer("weight", weight)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("kcij,bcij->bk", self.weight, self.features(x))


class InplaceAfter(nn.Module):
    """Conv feature layer whose output the network then overwrites in place, like DenseNet."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.features(x), inplace=True)
        return self.fc(out.mean((2, 3)))


# name -> (target layer, input size): the heavy nets at 64 px keep the file fast on 2 cores.
PARITY = {
    "resnet18": ("layer4", 96),
    "vgg11": ("features", 64),
    "densenet121": ("features", 64),
    "mobilenet_v3_small": ("features.12", 96),
}


@functools.cache
def _tv(name: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, num_classes=NUM_CLASSES).eval()


def _reference(cam_cls: type, model: nn.Module, layer: nn.Module, images: Tensor, c: int) -> Tensor:
    with cam_cls(model=model, target_layers=[layer]) as cam:
        # pytorch-grad-cam keeps a view of the layer output; on CPU a later in-place op
        # (DenseNet's relu) would overwrite it, so downstream gets a copy, as in ours.
        shield = layer.register_forward_hook(lambda m, i, o: o.clone())
        try:
            maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(c)] * len(images))
        finally:
            shield.remove()
    return torch.from_numpy(maps)


def _pearson(a: Tensor, b: Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]).double())[0, 1].item()


@pytest.mark.parametrize("name", list(PARITY))
@pytest.mark.parametrize(
    ("ours", "theirs"), [(grad_cam, pgc.GradCAM), (grad_cam_pp, pgc.GradCAMPlusPlus)]
)
def test_matches_pytorch_grad_cam(name: str, ours, theirs) -> None:
    net = _tv(name)
    layer_name, size = PARITY[name]
    # pytorch-grad-cam's Grad-CAM++ adds 1e-6 to alpha's denominator, comparable to g^2 for a
    # random-init net's tiny gradients; larger logits make both compute the same closed form.
    model = Scaled(net, 1.0 if ours is grad_cam else 1e3).eval()
    layer = resolve_layer(net, layer_name)
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    mine = minmax(upsample(ours(model, layer, images), size))
    compared = 0
    for c in range(NUM_CLASSES):
        ref = _reference(theirs, model, layer, images, c)
        for b in range(len(images)):
            if ref[b].max() == 0 and mine[b, c].max() == 0:
                continue
            assert _pearson(mine[b, c], ref[b]) > 0.999, (name, c, b)
            compared += 1
    assert compared >= len(images) * NUM_CLASSES // 2


def _hand_model() -> Readout:
    weight = torch.zeros(2, 1, 2, 2)
    weight[0] = 1.0  # alpha_0 = mean(1) = 1
    weight[1, 0, 0, 0] = -4.0  # alpha_1 = -4 / 4 = -1
    return Readout(nn.Identity(), weight)


def test_exact_hand_case() -> None:
    images = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]])
    maps = grad_cam(_hand_model(), "features", images)
    expected = torch.tensor([[[[1.0, 0.0], [3.0, 0.5]], [[0.0, 2.0], [0.0, 0.0]]]])
    assert torch.equal(maps, expected)


def test_exact_hand_case_pp() -> None:
    # Channel gradient g is constant: class 0 g = 1, S = sum(A) = 2.5 -> alpha = 1 / (2 + 2.5),
    # weight = 4 * alpha; class 1 has g = -4 at one pixel only, and ReLU(g) = 0 -> weight 0.
    images = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]])
    maps = grad_cam_pp(_hand_model(), "features", images)
    weight0 = 4.0 / 4.5
    expected = torch.tensor([[1.0, 0.0], [3.0, 0.5]]) * weight0
    torch.testing.assert_close(maps[0, 0], expected, rtol=1e-6, atol=0)
    assert torch.equal(maps[0, 1], torch.zeros(2, 2))


def test_peaked_on_the_region_the_logit_reads() -> None:
    # Class 1 reads channel 0 on a fixed 2x2 window, class 0 reads channel 1 on another one.
    weight = torch.zeros(2, 2, 8, 8)
    weight[1, 0, 2:4, 5:7] = 0.25
    weight[0, 1, 5:7, 1:3] = 0.25
    model = Readout(nn.ReLU(), weight)
    images = torch.zeros(2, 2, 8, 8)
    images[:, 0, 2:4, 5:7] = torch.rand(2, 2, 2) + 0.5
    images[:, 1] = torch.rand(2, 8, 8)
    maps = grad_cam(model, "features", images, classes=[1])
    # alpha_0 = 4 * 0.25 / 64 exactly, alpha_1 = 0: the map is channel 0 / 64, only on the window.
    assert torch.equal(maps[:, 0], images[:, 0] / 64)
    assert (maps[:, 0, 2:4, 5:7] > 0).all()
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:4, 5:7] = False
    assert torch.equal(maps[:, 0, outside], torch.zeros(2, 60))


def test_inplace_after_layer_uses_layer_output() -> None:
    torch.manual_seed(0)
    model = InplaceAfter().eval()
    images = torch.rand(2, 3, 6, 6)
    acts = model.features(images).detach().requires_grad_(True)
    logits = model.fc(acts.relu().mean((2, 3)))
    expected = []
    for c in range(NUM_CLASSES):
        (g,) = torch.autograd.grad(logits[:, c].sum(), acts, retain_graph=True)
        expected.append(torch.einsum("bk,bkhw->bhw", g.mean((2, 3)), acts.detach()).relu())
    torch.testing.assert_close(grad_cam(model, "features", images), torch.stack(expected, 1))
    assert acts.detach().min() < 0  # negatives present: a clobbered capture would differ
    torch.testing.assert_close(
        activation_map(model, model.features, images), acts.detach().mean(1, keepdim=True)
    )


class NoGradBackbone(nn.Module):
    """Linear probe that runs its frozen feature extractor under no_grad."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.fc = nn.Linear(4, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            feats = self.features(x)
        return self.fc(feats.mean((2, 3)))


def test_layer_inside_models_no_grad_block() -> None:
    torch.manual_seed(0)
    model = NoGradBackbone()
    images = torch.rand(2, 3, 6, 6)
    acts = model.features(images).detach()
    # d logit_c / d A is fc.weight[c] / (h * w) at every position.
    weights = model.fc.weight.detach() / acts[0, 0].numel()
    expected = torch.einsum("ck,bkhw->bchw", weights, acts).relu()
    torch.testing.assert_close(grad_cam(model, "features", images), expected)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("frozen_head", [False, True])
def test_logits_detached_from_layer_raise(frozen_head: bool) -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(32, 2))
    model[2].requires_grad_(not frozen_head)
    model[1].register_forward_hook(lambda m, i, o: o.detach())
    with pytest.raises(ValueError, match="no gradient path"):
        grad_cam(model, "0", torch.rand(1, 3, 4, 4))
    assert all(not m._forward_hooks for m in model[0].modules())


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES).eval()
    return model, torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("method", [grad_cam, grad_cam_pp])
def test_batched_equals_per_image(resnet, method) -> None:
    model, images = resnet
    batched = method(model, "layer4", images)
    single = torch.cat([method(model, "layer4", img[None]) for img in images])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-6)
    chunked = method(model, "layer4", images, batch_size=3)
    torch.testing.assert_close(chunked, batched, rtol=1e-4, atol=1e-6)


def test_one_forward_pass_per_chunk(resnet) -> None:
    model, images = resnet
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        grad_cam(model, "layer4", images)
        assert len(calls) == 1
        grad_cam(model, "layer4", images, batch_size=2)
        assert len(calls) == 3
    finally:
        handle.remove()


def test_leaves_model_state_as_found(resnet) -> None:
    model, images = resnet
    model.train()
    model.layer1.eval()  # mixed modes, as fine-tune policies leave them
    modes = {name: m.training for name, m in model.named_modules()}
    model.layer2.requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.fc.weight.grad = torch.full_like(model.fc.weight, 7.0)
    expected = grad_cam(model.eval(), "layer4", images)
    model.train()
    model.layer1.eval()
    maps = grad_cam(model, "layer4", images)
    torch.testing.assert_close(maps, expected)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    assert all(not m._forward_hooks for m in model.modules())
    model.fc.weight.grad = None
    model.requires_grad_(True)
    model.eval()


def test_restores_state_on_error() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2))
    model.train()
    with pytest.raises(RuntimeError):  # the Linear expects 2 features, gets 2 * 4 * 4
        grad_cam(model, "0", torch.rand(1, 3, 4, 4))
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())


def test_grad_free_contexts_and_frozen_params(resnet) -> None:
    model, images = resnet
    expected = grad_cam(model, "layer4", images)
    with torch.no_grad():
        torch.testing.assert_close(grad_cam(model, "layer4", images), expected)
    with torch.inference_mode():
        inference_images = images.clone()
        torch.testing.assert_close(grad_cam(model, "layer4", inference_images), expected)
    model.requires_grad_(False)
    try:
        torch.testing.assert_close(grad_cam(model, "layer4", images), expected)
    finally:
        model.requires_grad_(True)


def test_output_type_and_classes_order(resnet) -> None:
    model, images = resnet
    full = grad_cam(model, model.layer4, images)
    assert full.shape == (4, NUM_CLASSES, 2, 2)
    assert full.dtype == torch.float32 and not full.requires_grad
    assert full.device == images.device
    assert full.amin() >= 0 and full.amax() > 0
    torch.testing.assert_close(grad_cam(model, "layer4", images, classes=[2, 0]), full[:, [2, 0]])
    torch.testing.assert_close(
        grad_cam(model, "layer4", images, classes=torch.tensor([1])), full[:, [1]]
    )


def test_activation_map_is_channel_mean(resnet) -> None:
    model, images = resnet
    with torch.no_grad():
        feats = nn.Sequential(*list(model.children())[:-2])(images)
    maps = activation_map(model, "layer4", images, batch_size=3)
    assert maps.shape == (4, 1, 2, 2) and maps.dtype == torch.float32
    torch.testing.assert_close(maps, feats.mean(1, keepdim=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer": "nope"}, "no submodule"),
        ({"layer": nn.Conv2d(1, 1, 1)}, "not part of model"),
        ({"classes": [0, NUM_CLASSES]}, "classes"),
        ({"classes": [0.5]}, "integer"),
        ({"classes": []}, "classes"),
        ({"images": torch.rand(3, 64, 64)}, "images"),
        ({"batch_size": 0}, "batch_size"),
        ({"layer": "layer1.0.relu"}, "ran 2 times"),
    ],
)
def test_bad_input_raises(resnet, kwargs: dict, message: str) -> None:
    model, images = resnet
    args = {"layer": "layer4", "images": images, "classes": None} | kwargs
    with pytest.raises(ValueError, match=message):
        grad_cam(model, **args)
    assert all(not m._forward_hooks for m in model.modules())
