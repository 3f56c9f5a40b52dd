"""Grad-CAM, Grad-CAM++ and activation maps: raw heatmaps at a target layer's resolution."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from cxrlab.callbacks.explanations.methods import heatmap_method
from cxrlab.lightning_modules.eval_mode import eval_mode

Classes = Sequence[int] | Tensor | None
# (activations [B, K, h, w], d logit / d activations [B, K, h, w]) -> channel weights [B, K]
ChannelWeights = Callable[[Tensor, Tensor], Tensor]


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """Return the target layer given as a submodule of `model` or its dotted name."""
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise ValueError(
                f"layer: {type(model).__name__} has no submodule {layer!r}; "
                "pick a name from model.named_modules()"
            ) from None
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("layer: module is not part of model; pass one of model.modules()")
        return layer
    raise ValueError(f"layer: expected an nn.Module or a dotted name, got {type(layer).__name__}")


@heatmap_method("gradcam")
def grad_cam(
    model: nn.Module,
    layer: nn.Module | str,
    images: Tensor,
    classes: Classes = None,
    *,
    batch_size: int | None = None,
) -> Tensor:
    """Raw Grad-CAM maps [B, C, h, w] of the requested classes' logits at `layer`."""
    return _class_maps(model, layer, images, classes, _grad_cam_weights, batch_size)


@heatmap_method("gradcampp")
def grad_cam_pp(
    model: nn.Module,
    layer: nn.Module | str,
    images: Tensor,
    classes: Classes = None,
    *,
    batch_size: int | None = None,
) -> Tensor:
    """Raw Grad-CAM++ maps [B, C, h, w] of the requested classes' logits at `layer`."""
    return _class_maps(model, layer, images, classes, _grad_cam_pp_weights, batch_size)


@heatmap_method("activation", per_class=False)
def activation_map(
    model: nn.Module,
    layer: nn.Module | str,
    images: Tensor,
    *,
    batch_size: int | None = None,
) -> Tensor:
    """Channel mean [B, 1, h, w] of the layer's feature maps."""
    target = resolve_layer(model, layer)
    with eval_mode(model), torch.no_grad():
        maps = [
            _forward_capture(model, target, chunk, track=False)[1].mean(1, keepdim=True)
            for chunk in _chunks(images, batch_size)
        ]
    return torch.cat(maps).float().to(images.device)


def own_class_cam(model: nn.Module, layer: nn.Module | str, images: Tensor, classes: Tensor) -> Tensor:
    """Grad-CAM [B, h, w] of each image's own class (`classes` [B]) at any layer."""
    wanted = sorted(set(classes.tolist()))
    maps = grad_cam(model, layer, images, classes=wanted)
    channel = torch.tensor([wanted.index(c) for c in classes.tolist()])
    return maps[torch.arange(len(images)), channel]


def tail_grad_cam(tail: nn.Module, acts: Tensor, classes: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Logits [B, K] of `tail` (the network after a layer) on that layer's activations [B, C, h, w],
    and Grad-CAM [B, h, w] of each image's own class (`classes` [B], default the predicted one)
    there. The backward pass runs through the tail alone and touches no parameter's gradient."""
    with torch.inference_mode(False), torch.enable_grad():
        feats = acts.detach().clone().float().requires_grad_(True)
        logits = tail(feats)
        chosen = logits.detach().argmax(1) if classes is None else classes.to(logits.device)
        # Images are independent, so one backward pass of the summed own-class logits gives all.
        (grads,) = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), feats)
    acts = feats.detach()
    maps = torch.einsum("bk,bkhw->bhw", _grad_cam_weights(acts, grads), acts).relu()
    return logits.detach(), maps


def _grad_cam_weights(acts: Tensor, grads: Tensor) -> Tensor:
    return grads.mean((2, 3))


def _grad_cam_pp_weights(acts: Tensor, grads: Tensor) -> Tensor:
    # Closed form of Chattopadhyay et al. (eq. 19) for Y = exp(logit): the exp factors cancel in
    # alpha and only scale the weights per map, so they are left out as in the reference code.
    g2 = grads.square()
    denom = 2 * g2 + acts.sum((2, 3), keepdim=True) * g2 * grads
    alpha = torch.where(denom != 0, g2 / denom, 0.0)
    return (alpha * grads.relu()).sum((2, 3))


def _class_maps(
    model: nn.Module,
    layer: nn.Module | str,
    images: Tensor,
    classes: Classes,
    weigh: ChannelWeights,
    batch_size: int | None,
) -> Tensor:
    target = resolve_layer(model, layer)
    # Lightning evaluates under inference mode, whose tensors cannot join an autograd graph.
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        maps = [
            _chunk_maps(model, target, chunk, classes, weigh)
            for chunk in _chunks(images, batch_size)
        ]
    return torch.cat(maps).to(images.device)


def _chunk_maps(
    model: nn.Module, layer: nn.Module, images: Tensor, classes: Classes, weigh: ChannelWeights
) -> Tensor:
    if images.is_inference():
        images = images.clone()  # a normal tensor, so ops before the layer may record a graph
    logits, feats = _forward_capture(model, layer, images, track=True)
    if not logits.requires_grad:
        raise _detached_error()
    index = _class_indices(classes, logits.shape[1])
    acts = feats.detach().float()
    maps = []
    for i, c in enumerate(index):
        # autograd.grad (not backward) leaves every parameter's .grad untouched.
        (grads,) = torch.autograd.grad(
            logits[:, c].sum(),
            feats,
            retain_graph=i < len(index) - 1,
            allow_unused=True,
        )
        if grads is None:
            raise _detached_error()
        weights = weigh(acts, grads.float())
        maps.append(torch.einsum("bk,bkhw->bhw", weights, acts).relu())
    return torch.stack(maps, 1)


def _detached_error() -> ValueError:
    return ValueError(
        "model: its logits have no gradient path to layer; remove the detach/no_grad after it"
    )


def _forward_capture(
    model: nn.Module, layer: nn.Module, images: Tensor, *, track: bool
) -> tuple[Tensor, Tensor]:
    """One forward pass returning the logits and the layer's output (a grad leaf if `track`)."""
    captured: list[Tensor] = []

    def hook(module: nn.Module, inputs: tuple, output: object) -> Tensor:
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise ValueError("layer: its output must be one [B, K, h, w] tensor; pick a conv block")
        # A fresh leaf gives a graph even with every parameter frozen, and its own storage
        # survives in-place ops the network applies later (DenseNet's relu after `features`).
        feats = output.detach().clone().requires_grad_(track)
        captured.append(feats)
        if track:
            # Models that run a frozen backbone under no_grad still need a graph from here on;
            # their no_grad block restores the caller's mode when it exits.
            torch.set_grad_enabled(True)
        return feats.clone()

    handle = layer.register_forward_hook(hook)
    try:
        logits = model(images)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(
            f"layer: ran {len(captured)} times in one forward pass; pick a module that runs once"
        )
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise ValueError("model: must return logits [B, K]; call it in eval mode on images")
    return logits, captured[0]


def _class_indices(classes: Classes, num_classes: int) -> list[int]:
    if classes is None:
        return list(range(num_classes))
    if isinstance(classes, Tensor):
        if classes.ndim != 1 or classes.is_floating_point() or classes.is_complex():
            raise ValueError("classes: pass a 1-D integer tensor or a list of class indices")
        classes = classes.tolist()
    try:
        index = [operator.index(c) for c in classes]
    except TypeError:
        raise ValueError(f"classes: need integer class indices, got {classes!r}") from None
    if not index or any(not 0 <= c < num_classes for c in index):
        raise ValueError(f"classes: need class indices in [0, {num_classes}), got {index}")
    return index


def _chunks(images: Tensor, batch_size: int | None) -> tuple[Tensor, ...]:
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError("images: pass a float tensor [B, C, H, W] in [0, 1]")
    if batch_size is None:
        return (images,)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: need a positive int or None, got {batch_size!r}")
    return images.split(batch_size)
