"""Model randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): a method whose maps
barely change when the network's weights are re-initialised, from the head down, explains the input
rather than the model."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cxrlab.callbacks.explanations.display import upsample
from cxrlab.callbacks.explanations.explanation import target_layer
from cxrlab.callbacks.explanations.methods import heatmaps, of_class
from cxrlab.callbacks.explanations.sanity.similarity import spearman, ssim
from cxrlab.config import ExplainConfig
from cxrlab.lightning_modules.backbones import backbone_blocks
from cxrlab.lightning_modules.classifier import CXRClassifier

# (model, images [N, 1, H, W] in [0, 1], classes [N]) -> one map per image [N, h, w]
Explain = Callable[[nn.Module, Tensor, Tensor], Tensor]
# (stage name, dotted names of the modules it re-initialises)
Stage = tuple[str, list[str]]


@dataclass
class StageResult:
    """How alike a method's maps stayed to the trained model's once a stage was randomised."""

    name: str
    spearman: float  # mean over the images
    ssim: float  # mean over the images
    spearman_per_image: Tensor  # [N]
    ssim_per_image: Tensor  # [N]
    maps: Tensor  # [N, h, w] this stage's maps as `explain` returned them, on the CPU


def randomisation_stages(model: CXRClassifier, limit: int | None = None) -> list[Stage]:
    """The stages from the top down: the head, then the backbone blocks last to first (the top `limit`)."""
    blocks = backbone_blocks(model.config.model.backbone)
    spans = _block_modules(model.backbone, blocks)
    below = [(f"backbone.{b}", [f"backbone.{m}" for m in span]) for b, span in zip(blocks, spans, strict=True)][::-1]
    return [("head", ["head"]), *below[:limit]]


def _block_modules(features: nn.Module, blocks: list[str]) -> list[list[str]]:
    """Each block's modules: a registry block is one child of the extractor, while timm's blocks name
    where a stage starts, so such a block spans its siblings up to the next one."""
    parent = blocks[0].rpartition(".")[0]
    prefix = f"{parent}." if parent else ""
    siblings = [name for name, _ in features.get_submodule(parent).named_children()]
    starts = [siblings.index(b.rpartition(".")[2]) for b in blocks]
    # Parameter-free children before the first block have nothing to randomise and are left out;
    # whatever follows the last block (a final norm) belongs to it.
    ends = [*starts[1:], len(siblings)]
    return [[prefix + s for s in siblings[i:j]] for i, j in zip(starts, ends, strict=True)]


def randomise(module: nn.Module, seed: int) -> None:
    """Re-initialise `module` in place as freshly built layers are, drawing from torch seeded with `seed`.

    Every submodule with reset_parameters() is reset, so BatchNorm's running statistics go back to
    0 and 1 along with its affine weights: a fresh layer carries no trained statistics either, and
    this is what quantus' MPRT does. Parameters of a module without reset_parameters keep their values.
    """
    # reset_parameters draws from the global generator; forking it leaves the caller's stream as it was.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


def randomisation(
    model: nn.Module,
    images: Tensor,
    classes: Tensor,
    explain: Explain,
    stages: Sequence[Stage],
    seed: int = 0,
    absolute: bool = True,
    cascading: bool = True,
    reference: Tensor | None = None,
) -> list[StageResult]:
    """One result per stage, each compared with the trained model's maps (`reference`, computed
    when not given): `cascading` randomises the stages one after another, cumulatively, on one copy
    of `model`; otherwise each stage alone on a fresh copy."""
    reference = explain(model, images, classes) if reference is None else reference
    randomised = deepcopy(model)
    results = []
    for name, modules in stages:
        if not cascading:
            randomised = deepcopy(model)
        _randomise_stage(randomised, modules, seed)
        results.append(_compare(name, reference, explain(randomised, images, classes), images, absolute))
    return results


def _randomise_stage(model: nn.Module, modules: list[str], seed: int) -> None:
    # Every stage draws from `seed` afresh, so a block gets the same weights in the cascade and
    # alone, and a one-module stage gets what quantus' MPRT gives it with seed - 1 (it seeds seed + 1).
    # A ModuleList only refers to the modules; it does not move them.
    randomise(nn.ModuleList(model.get_submodule(m) for m in modules), seed)


def _compare(name: str, reference: Tensor, maps: Tensor, images: Tensor, absolute: bool) -> StageResult:
    # At the input's resolution, where maps are shown and where SSIM's 7x7 window fits any layer's map.
    size = tuple(images.shape[-2:])
    a, b = upsample(reference.detach().cpu(), size), upsample(maps.detach().cpu(), size)
    if absolute:
        # Adebayo et al. report both; magnitudes are the stricter test (a map that only flips its
        # sign has not changed what it highlights) and quantus' default. Non-negative maps
        # (Grad-CAM, edges) are unaffected.
        a, b = a.abs(), b.abs()
    rank, structure = spearman(a, b), ssim(a, b)
    return StageResult(name, float(rank.mean()), float(structure.mean()), rank, structure, maps.detach().cpu())


def passes(results: Sequence[StageResult], bound: float) -> bool:
    """Whether a cascade's mean rank correlation fell below `bound` by the time its top half was randomised."""
    top_half = results[: math.ceil(len(results) / 2)]
    return any(r.spearman < bound for r in top_half)


def method_explainer(method: str, layer: str, batch_size: int = 32, settings: ExplainConfig | None = None) -> Explain:
    """An `explain` for the cascade: the registered `method`'s map of each image's class at `layer`."""

    # The layer goes by its dotted name, so it resolves in each randomised copy of the model.
    def explain(model: nn.Module, images: Tensor, classes: Tensor) -> Tensor:
        return of_class(heatmaps(model, layer, images, method, batch_size, settings), classes)

    return explain


def check_randomisation(
    model: CXRClassifier,
    images: Tensor,
    classes: Tensor,
    method: str,
    settings: ExplainConfig,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[list[StageResult], bool]:
    """The cascade of explain.sanity (its stages and bound) for one method, and whether it passes."""
    explain = method_explainer(method, target_layer(model, settings), batch_size, settings)
    stages = randomisation_stages(model, settings.sanity.stages)
    results = randomisation(model, images, classes, explain, stages, seed)
    return results, passes(results, settings.sanity.bound)
