"""Backbone registry: a name resolves to a feature extractor plus what cxrlab needs to know about it."""

from __future__ import annotations

import difflib
import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass
class Backbone:
    """A feature extractor and its metadata."""

    name: str
    features: nn.Module  # images [B, len(mean), H, W] (normalised) -> feature maps [B, channels, h, w]
    channels: int
    blocks: list[str]  # ordered module names inside `features`, for last:N fine-tuning
    target_layer: str  # module name inside `features` for Grad-CAM ("" = the whole extractor)
    input_size: int
    mean: tuple[float, ...]  # one per input channel: 3, or 1 for torchxrayvision weights
    std: tuple[float, ...]
    # mean/std (and the input channels) come from the weights file, not from the backbone's name,
    # so a checkpoint must carry them (torchxrayvision weights, lightning_modules/xrv_weights.py).
    input_from_weights: bool = False


# --------------------------------------------------------------------------- torchvision adapters


def _named(blocks: list[tuple[str, nn.Module]]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(blocks))


def _vgg(m: nn.Module) -> tuple[nn.Sequential, int, str]:
    # One block per max-pool stage, so last:1 is "the last conv block" and the Grad-CAM target
    # (block5's output) is the last pooling layer, as in the heatmap-template study.
    blocks, current = [], []
    for layer in m.features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append((f"block{len(blocks) + 1}", nn.Sequential(*current)))
            current = []
    return _named(blocks), 512, blocks[-1][0]


def _resnet(m: nn.Module) -> tuple[nn.Sequential, int, str]:
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
    blocks = [("stem", stem)] + [(f"layer{i}", getattr(m, f"layer{i}")) for i in range(1, 5)]
    return _named(blocks), m.fc.in_features, "layer4"


def _densenet(m: nn.Module) -> tuple[nn.Sequential, int, str]:
    f = m.features
    stem = nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0)
    blocks = [("stem", stem)]
    for i in range(1, 4):
        blocks.append((f"block{i}", nn.Sequential(getattr(f, f"denseblock{i}"), getattr(f, f"transition{i}"))))
    # torchvision applies an in-place functional ReLU after features; a module keeps it hookable.
    blocks.append(("block4", nn.Sequential(f.denseblock4, f.norm5, nn.ReLU(inplace=False))))
    return _named(blocks), m.classifier.in_features, "block4"


def _inception(m: nn.Module) -> tuple[nn.Sequential, int, str]:
    # The auxiliary classifier only helps ImageNet training; cxrlab's own head replaces both
    # outputs, so AuxLogits is dropped (it would otherwise break [B, K] logits in train mode).
    stem = nn.Sequential(
        m.Conv2d_1a_3x3, m.Conv2d_2a_3x3, m.Conv2d_2b_3x3, m.maxpool1,
        m.Conv2d_3b_1x1, m.Conv2d_4a_3x3, m.maxpool2,
    )
    mixed5 = nn.Sequential(m.Mixed_5b, m.Mixed_5c, m.Mixed_5d)
    mixed6 = nn.Sequential(m.Mixed_6a, m.Mixed_6b, m.Mixed_6c, m.Mixed_6d, m.Mixed_6e)
    mixed7 = nn.Sequential(m.Mixed_7a, m.Mixed_7b, m.Mixed_7c)
    blocks = [("stem", stem), ("mixed5", mixed5), ("mixed6", mixed6), ("mixed7", mixed7)]
    return _named(blocks), 2048, "mixed7"


def _staged(m: nn.Module) -> tuple[nn.Sequential, int, str]:
    # EfficientNet / MobileNet: `features` is already a stage sequence.
    blocks = [(f"stage{i}", layer) for i, layer in enumerate(m.features)]
    channels = blocks[-1][1][0].out_channels
    return _named(blocks), channels, blocks[-1][0]


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    adapter: Callable[[nn.Module], tuple[nn.Sequential, int, str]]
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


_TV = torchvision.models
REGISTRY: dict[str, _Entry] = {
    "vgg16": _Entry(_TV.vgg16, _vgg),
    "vgg19": _Entry(_TV.vgg19, _vgg),
    "densenet121": _Entry(_TV.densenet121, _densenet),
    "densenet201": _Entry(_TV.densenet201, _densenet),
    "resnet18": _Entry(_TV.resnet18, _resnet),
    "resnet50": _Entry(_TV.resnet50, _resnet),
    "resnet101": _Entry(_TV.resnet101, _resnet),
    # The Google weights expect inputs in [-1, 1]; normalising with 0.5/0.5 is what torchvision's
    # transform_input does, so it is switched off below.
    "inception_v3": _Entry(_TV.inception_v3, _inception, 299, INCEPTION_MEAN, INCEPTION_STD),
    "efficientnet_b0": _Entry(_TV.efficientnet_b0, _staged),
    "mobilenet_v3_large": _Entry(_TV.mobilenet_v3_large, _staged),
}


def backbone_names() -> list[str]:
    """Every registry name (timm:<name> is accepted on top)."""
    return sorted(REGISTRY)


def check_backbone_name(name: str) -> None:
    """Raise a helpful error for an unknown backbone name."""
    if name in REGISTRY or (name.startswith("timm:") and len(name) > 5):
        return
    close = difflib.get_close_matches(name, backbone_names(), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ValueError(
        f"model.backbone: unknown backbone {name!r}{hint}; choose one of "
        f"{', '.join(backbone_names())} or timm:<any timm model name>"
    )


def _torchvision_model(name: str, weights: str) -> nn.Module:
    entry = REGISTRY[name]
    kwargs: dict = {}
    if name == "inception_v3":
        kwargs = {"aux_logits": True, "init_weights": weights == "none"}
    if weights == "imagenet":
        w = torchvision.models.get_model_weights(name).DEFAULT
        try:
            model = entry.builder(weights=w, **kwargs)
        except Exception as e:  # no internet, proxy, corrupt cache...
            raise ValueError(
                f"model.weights=imagenet: could not load {name} ImageNet weights ({e}). "
                f"Put {w.url.rsplit('/', 1)[-1]} into {torch.hub.get_dir()}/checkpoints, "
                "pass model.weights=PATH, or use model.weights=none"
            ) from None
    else:
        model = entry.builder(weights=None, **kwargs)
    if name == "inception_v3":
        model.transform_input = False
    return model


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a plain .pth/.pt file or a Lightning/cxrlab checkpoint."""
    if not path.is_file():
        raise ValueError(f"model.weights: {path} does not exist; use imagenet, none or an existing file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"model.weights: {path} is not a loadable PyTorch weights file ({e})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model.weights: {path} holds no state dict of tensors")
    return state


def _load_path_weights(path: Path, model: nn.Module, features: nn.Module) -> None:
    """Load weights from PATH: a cxrlab checkpoint (backbone.*) or a torchvision state dict."""
    state = _load_state_file(path)
    own = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if own:
        target, state = features, own
    else:
        target = model
    model_state = target.state_dict()
    usable = {k: v for k, v in state.items() if k in model_state and model_state[k].shape == v.shape}
    if not usable:
        raise ValueError(
            f"model.weights: no tensor in {path} matches this backbone's layers; "
            "is it a state dict of the same architecture?"
        )
    # The classifier layers are replaced by cxrlab's head, so only they may be absent.
    missing = [k for k in model_state if k not in usable and not k.startswith(("fc.", "classifier.", "AuxLogits."))]
    if missing:
        raise ValueError(
            f"model.weights: {path} lacks {len(missing)} of this backbone's tensors (or their shapes "
            f"differ), e.g. {missing[:3]}; is it a state dict of {target.__class__.__name__}?"
        )
    target.load_state_dict(usable, strict=False)


def _timm_backbone(name: str, weights: str) -> Backbone:
    try:
        import timm
    except ImportError:
        raise ValueError(
            f"model.backbone={name!r} needs timm: pip install 'cxrlab[timm]'"
        ) from None
    tname = name.removeprefix("timm:")
    if tname not in timm.list_models():
        close = difflib.get_close_matches(tname, timm.list_models(), n=3)
        raise ValueError(f"model.backbone: timm has no model {tname!r}; close names: {close}")
    kwargs: dict = {"pretrained": weights == "imagenet", "num_classes": 0, "global_pool": ""}
    if weights not in ("imagenet", "none"):
        if not Path(weights).is_file():
            raise ValueError(f"model.weights: {weights} does not exist")
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    try:
        model = timm.create_model(tname, **kwargs)
    except Exception as e:
        raise ValueError(f"model.backbone={name!r}: timm could not build it ({e})") from None
    features = TimmFeatures(model)
    cfg = model.pretrained_cfg
    blocks = [f"model.{b}" for b in _timm_stage_starts(model)]
    return Backbone(
        name=name,
        features=features,
        channels=model.num_features,
        blocks=blocks,
        target_layer="",
        input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
    )


def _timm_stage_starts(model: nn.Module) -> list[str]:
    """The first top-level child with parameters of each feature stage of a timm model.

    timm's feature_info marks where each stage ends, often at a bare activation (Xception's
    act2, act4) that cannot start a fine-tuned part; a stage starts after the previous one ends.
    """
    children = [n for n, _ in model.named_children()]
    ends = sorted({children.index(info["module"].split(".")[0]) for info in model.feature_info})
    starts, begin = [], 0
    for end in ends:
        first = next(
            (children[i] for i in range(begin, end + 1)
             if any(True for _ in model.get_submodule(children[i]).parameters())),
            None,
        )
        if first is not None:
            starts.append(first)
        begin = end + 1
    return starts


class TimmFeatures(nn.Module):
    """Wraps a timm model so that calling it returns its final feature maps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def build_backbone(name: str, weights: str = "none") -> Backbone:
    """Resolve a registry name and weights (imagenet | none | PATH) to a Backbone (torchxrayvision
    weights converted by `cxrlab models import`: xrv_weights.backbone_for, which calls this one)."""
    check_backbone_name(name)
    if name.startswith("timm:"):
        return _timm_backbone(name, weights)
    entry = REGISTRY[name]
    model = _torchvision_model(name, "imagenet" if weights == "imagenet" else "none")
    features, channels, target = entry.adapter(model)
    if weights not in ("imagenet", "none"):
        _load_path_weights(Path(weights), model, features)
    return Backbone(
        name=name,
        features=features,
        channels=channels,
        blocks=[n for n, _ in features.named_children()],
        target_layer=target,
        input_size=entry.input_size,
        mean=entry.mean,
        std=entry.std,
    )


def default_input_size(name: str) -> int:
    """The backbone's native square input side, without building it."""
    check_backbone_name(name)
    if name.startswith("timm:"):
        try:
            import timm
        except ImportError:
            raise ValueError(f"model.backbone={name!r} needs timm: pip install 'cxrlab[timm]'") from None
        cfg = timm.get_pretrained_cfg(name.removeprefix("timm:"))
        return int(cfg.input_size[-1]) if cfg is not None else 224
    return REGISTRY[name].input_size


@functools.lru_cache(maxsize=32)
def _meta_backbone(name: str) -> Backbone:
    """The backbone built on the meta device: shapes and names only, no memory, no weights."""
    with torch.device("meta"):
        return build_backbone(name, "none")


def backbone_blocks(name: str) -> list[str]:
    """The ordered fine-tuning blocks of a backbone, without building its weights."""
    return list(_meta_backbone(name).blocks)


@functools.lru_cache(maxsize=64)
def feature_map_size(name: str, image_size: int) -> tuple[int, int]:
    """The [h, w] of the backbone's feature maps for a square input, computed on the meta device,
    so configs can be checked before anything is built."""
    features = _meta_backbone(name).features.eval()
    with torch.device("meta"):
        try:
            out = features(torch.empty(1, 3, image_size, image_size))
        except (RuntimeError, ValueError):
            out = None
    if out is None or out.ndim != 4 or min(out.shape[2:]) < 1:
        raise ValueError(
            f"data.image_size={image_size} is too small for model.backbone={name!r}; "
            f"raise data.image_size (its native size is {default_input_size(name)})"
        )
    return int(out.shape[2]), int(out.shape[3])
