"""The trust model of a classifier: fitted once after training (calibration, feature Gaussians,
heatmap templates), stored in its checkpoint as plain tensors, and judging every prediction."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cxrlab.callbacks.explanations.focus import mask_focus, region_focus
from cxrlab.callbacks.explanations.gradcam import own_class_cam, tail_grad_cam
from cxrlab.callbacks.explanations.shortcut import shortcut_verdict
from cxrlab.callbacks.trust.calibration import expected_calibration_error, fit_temperature
from cxrlab.callbacks.trust.ood import FeatureGaussians, fit_gaussians, pass_threshold
from cxrlab.callbacks.trust.templates import class_templates, held_out_corr, template_corr
from cxrlab.config import ExplainConfig, TrustConfig
from cxrlab.lightning_modules.eval_mode import eval_mode


@dataclass
class Observed:
    """What one pass of the model sees of a set of images."""

    logits: Tensor  # [N, K]
    features: Tensor  # [N, D] pooled block outputs
    maps: Tensor  # [N, h, w] Grad-CAM of the predicted class at the backbone's output


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's blocks by their full names (one block when it is not a Sequential)."""
    if isinstance(model.backbone, nn.Sequential):
        return [(f"backbone.{n}", m) for n, m in model.backbone.named_children()]
    return [("backbone", model.backbone)]


def observe_batch(model: nn.Module, images: Tensor, layer: str) -> Observed:
    """Logits, pooled features and the predicted class's Grad-CAM at `layer` (a backbone block,
    or the whole backbone) of images [B, 1|3, H, W]."""
    blocks = _blocks(model)
    names = [n for n, _ in blocks]
    at = len(blocks) - 1 if layer == "backbone" else names.index(layer) if layer in names else None
    pooled: list[Tensor] = []

    def pool(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        # Every block's pooled output: early blocks see textures and intensities that the last
        # one is invariant to (noise, a blank or inverted film), late ones see content.
        pooled.append(output.detach().float().mean((2, 3)))

    hooks = [block.register_forward_hook(pool) for _, block in blocks]
    try:
        with eval_mode(model), torch.no_grad():
            x = model.preprocess(images)
            for _, block in blocks[: len(blocks) if at is None else at + 1]:
                x = block(x)
            if at is not None:
                # The blocks after the layer run once, with gradients, for the map and the logits.
                tail = nn.Sequential(*[b for _, b in blocks[at + 1 :]], model.head)
                logits, maps = tail_grad_cam(tail, x)
            else:  # a layer inside a block: grad_cam's full backward pass
                logits = model.head(x)
                n = len(pooled)
                maps = own_class_cam(model, layer, images, logits.argmax(1))
                del pooled[n:]  # grad_cam's own forward pass ran the hooks again
    finally:
        for hook in hooks:
            hook.remove()
    return Observed(logits.float(), torch.cat(pooled, 1), maps)


def trust_layer(model: nn.Module) -> str:
    """The layer trust maps are taken at: the one the training run explained."""
    return model.config.explain.target_layer or model.target_layer


def observe(model: nn.Module, batches: Iterable[tuple[Tensor, Any]], limit: int) -> tuple[Observed, Tensor]:
    """Observe up to `limit` images of (images, targets) batches; also returns their targets (class
    indices [N], or a multi-label model's [N, K] 1/0/NaN)."""
    seen: list[Observed] = []
    labels: list[Tensor] = []
    n = 0
    device = next(model.parameters()).device
    for x, y in batches:
        take = min(len(x), limit - n)
        seen.append(observe_batch(model, x[:take].to(device), trust_layer(model)))
        labels.append(torch.as_tensor(y[:take]))
        n += take
        if n >= limit:
            break
    out = Observed(*(torch.cat([getattr(o, f).cpu() for o in seen]) for f in ("logits", "features", "maps")))
    return out, torch.cat(labels)


@dataclass
class Trust:
    """The fitted trust model."""

    temperature: float
    gaussians: FeatureGaussians
    ood_threshold: float  # squared Mahalanobis distance above which an image is out of distribution
    templates: Tensor  # [K, h, w]
    typical_min: float  # template correlation below which a heatmap is atypical
    ece_before: float  # validation ECE of the raw and of the temperature-scaled probabilities
    ece_after: float

    @property
    def ood_only(self) -> bool:
        """A multi-label model's: the out-of-distribution test alone (temperature 1, no templates)."""
        return not len(self.templates)

    def to_dict(self) -> dict[str, Any]:
        """Plain tensors and floats, which a weights_only checkpoint load reads."""
        g = self.gaussians
        return {
            "temperature": self.temperature, "ood_threshold": self.ood_threshold, "typical_min": self.typical_min,
            "ece_before": self.ece_before, "ece_after": self.ece_after, "templates": self.templates,
            "centre": g.centre, "scale": g.scale, "means": g.means, "precision": g.precision,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trust:
        """The trust model a checkpoint stores."""
        gaussians = FeatureGaussians(d["centre"], d["scale"], d["means"], d["precision"])
        return cls(d["temperature"], gaussians, d["ood_threshold"], d["templates"], d["typical_min"],
                   d["ece_before"], d["ece_after"])


def finding_groups(targets: Tensor) -> tuple[Tensor, Tensor]:
    """Multi-label targets [N, K] -> (image index, group) pairs: one per positive finding (group k),
    one for each image without any (group K), so every finding and the normal films get a mean."""
    positive = targets == 1
    rows, groups = positive.nonzero(as_tuple=True)
    normal = (~positive.any(1)).nonzero(as_tuple=True)[0]
    return torch.cat([rows, normal]), torch.cat([groups, torch.full_like(normal, targets.shape[1])])


def _fit_multilabel(model: nn.Module, train: Iterable, val: Iterable, settings: TrustConfig) -> Trust:
    """A multi-label model's trust model: the out-of-distribution test alone. Its per-finding
    thresholds were chosen on validation probabilities, which a temperature would move, and a
    heatmap template needs one class per image; so the temperature stays 1 and there are none."""
    k = len(model.classes)
    seen_train, y_train = observe(model, train, settings.max_images)
    rows, groups = finding_groups(y_train)
    gaussians = fit_gaussians(seen_train.features[rows], groups, k + 1)
    seen, y = observe(model, val, settings.max_images)
    threshold = pass_threshold(gaussians.distance(seen.features), settings.ood_pass)
    known = ~y.isnan()
    p = seen.logits.sigmoid()[known].double().numpy()
    ece = expected_calibration_error(np.stack([1 - p, p], 1), y[known].long().numpy())  # every finding a yes/no
    return Trust(1.0, gaussians, threshold, torch.zeros(0), math.nan, ece, ece)


def fit_trust(model: nn.Module, train: Iterable, val: Iterable, settings: TrustConfig) -> Trust:
    """Fit the trust model: feature Gaussians on training images; the out-of-distribution
    threshold, temperature and heatmap templates on validation images (all seen without
    augmentation)."""
    if getattr(model, "multilabel", False):
        return _fit_multilabel(model, train, val, settings)
    k = len(model.classes)
    seen_train, y_train = observe(model, train, settings.max_images)
    gaussians = fit_gaussians(seen_train.features, y_train.long(), k)
    seen, y = observe(model, val, settings.max_images)
    y = y.long()
    threshold = pass_threshold(gaussians.distance(seen.features), settings.ood_pass)
    temperature = fit_temperature(seen.logits, y)
    right = seen.logits.argmax(1) == y
    templates = class_templates(seen.maps[right], y[right], k)
    held_out = held_out_corr(seen.maps[right], y[right], k)
    held_out = held_out[~held_out.isnan()]
    typical_min = float(torch.quantile(held_out.double(), 1 - settings.typical_pass)) if len(held_out) else -1.0
    return Trust(
        temperature, gaussians, threshold, templates, typical_min,
        expected_calibration_error(seen.logits.softmax(1).numpy(), y.numpy()),
        expected_calibration_error((seen.logits / temperature).softmax(1).numpy(), y.numpy()),
    )


def trust_of(model: nn.Module) -> Trust | None:
    """The trust model a loaded checkpoint carries (None for one written before trust models)."""
    state = getattr(model, "trust_state", None)
    return Trust.from_dict(state) if state is not None else None


@dataclass
class Verdicts:
    """What the trust model says of each image of a batch (None fields: no trust model)."""

    logits: Tensor  # [N, K] as the model gives them
    probs: Tensor  # [N, K] calibrated where a trust model exists
    maps: Tensor  # [N, h, w] the predicted class's Grad-CAM
    shortcut_flag: list[bool | None]
    ood_score: Tensor | None = None  # [N] distance over the threshold: > 1 is out of distribution
    template_corr: Tensor | None = None  # [N]
    typical_min: float = math.nan

    @property
    def in_distribution(self) -> list[bool | None]:
        return [None] * len(self.probs) if self.ood_score is None else (self.ood_score <= 1).tolist()

    @property
    def typical(self) -> list[bool | None]:
        if self.template_corr is None:
            return [None] * len(self.probs)
        return [None if math.isnan(r) else r >= self.typical_min for r in self.template_corr.tolist()]


def judge(
    model: nn.Module, trust: Trust | None, images: Tensor, explain: ExplainConfig, lung_masks: Tensor | None = None
) -> Verdicts:
    """Probabilities and trust verdicts of images [B, 1, H, W] in [0, 1] (as the model takes them)."""
    seen = observe_batch(model, images, trust_layer(model))
    focus = region_focus(seen.maps, images.cpu(), explain.border_width, explain.corner_size)
    if lung_masks is not None:
        focus["lung_focus"] = mask_focus(seen.maps, lung_masks)
    severity = shortcut_verdict(focus, explain.alarm).severity
    flags = [None if math.isnan(s) else s > 1 for s in severity.tolist()]
    if trust is None:
        return Verdicts(seen.logits, model.probabilities(seen.logits), seen.maps, flags)
    ood_score = trust.gaussians.distance(seen.features) / trust.ood_threshold
    if trust.ood_only:
        return Verdicts(seen.logits, model.probabilities(seen.logits), seen.maps, flags, ood_score=ood_score)
    preds = seen.logits.argmax(1)
    return Verdicts(
        seen.logits, (seen.logits / trust.temperature).softmax(1), seen.maps, flags, ood_score=ood_score,
        template_corr=template_corr(seen.maps, trust.templates, preds), typical_min=trust.typical_min,
    )
