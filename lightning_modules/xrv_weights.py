"""torchxrayvision's DenseNet-121 weights as `model.weights`: converted once, then loaded safely.

torchxrayvision (github.com/mlmed/torchxrayvision) ships its `densenet121-res224-*` weights (all,
nih, pc, chex, rsna, mimic_nb, mimic_ch) as whole pickled models, which cxrlab's
`torch.load(weights_only=True)` refuses. `cxrlab models import FILE --out OUT` converts such a file,
or a state dict of one, into a plain dict of tensors and lists (FORMAT below) that weights_only
loading reads; `model.weights: OUT` with `model.backbone: densenet121` then builds that network:
a torchvision densenet121 whose first convolution takes one channel, every `features.*` tensor
loaded with strict key and shape matching, and the input normalisation that maps cxrlab's [0, 1]
images to torchxrayvision's [-1024, 1024] on one channel (no ImageNet mean/std). The pretrained
classifier is kept in the file (with its pathology names and operating-point thresholds), never
used as the head: cxrlab's head is built for the run's own classes.

Reading a pickled model never runs its code unless the user asks for it:
1. `torch.load(weights_only=True)`: a state dict (or a dict holding one) loads as plain data.
2. A pickled model: a restricted unpickler (Python's pickle docs, "Restricting Globals") that knows
   only torch's tensor rebuilders, its layer classes, and torchxrayvision's four DenseNet layer
   names mapped to an inert stand-in. Nothing from the file runs and torchxrayvision need not be
   installed. (torch's weights_only loader would do for the zip format but refuses the module
   records of the old non-zip format, which files saved before torch 1.6 have.)
3. A pickle needing anything else (other classes, functions) stops with one line naming it. Only
   with `--trust_pickle` (the user's explicit word that the file is trusted), and only with
   torchxrayvision installed (its classes must exist to rebuild the model), is the file loaded with
   `weights_only=False`, after a warning that this runs the file's pickle code. A warning alone
   would come too late to protect anyone: the code runs as it is printed.
torchxrayvision, where installed, also names the pathologies and thresholds of its own release
files (looked up by file name); it is imported lazily, only by the import command.
"""

from __future__ import annotations

import pickle
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from cxrlab.lightning_modules.backbones import (
    REGISTRY,
    Backbone,
    build_backbone,
    check_backbone_name,
)

FORMAT = "cxrlab-xrv-v1"
ARCHS = ("densenet121",)  # torchxrayvision's DenseNet with densenet121's block configuration
INPUT_SCALE = (-1024.0, 1024.0)  # torchxrayvision's pixel range (xrv.datasets.normalize)
INPUT_SIZE = 224  # the `res224` of the weights' names
CLASSIFIER = ("classifier.weight", "classifier.bias")
# torchxrayvision's layer classes as its pickles name them (read into _Inert stand-ins), and the
# torch layers they hold: all that a pickled model may need to be read without running its code.
XRV_CLASSES = ("DenseNet", "_DenseBlock", "_DenseLayer", "_Transition")
TORCH_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Linear, nn.Sequential, nn.Dropout)


@dataclass
class Source:
    """What an input file holds, before it is checked against the architecture."""

    state: dict[str, torch.Tensor]
    pathologies: list[str] | None
    op_threshs: torch.Tensor | None


class _Inert(nn.Module):
    """A module with no code of its own: what a torchxrayvision layer unpickles into, so its
    parameters and buffers can be read without torchxrayvision or its constructors."""


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _first_line(e: BaseException) -> str:
    return next(iter(str(e).strip().splitlines()), type(e).__name__)


# --------------------------------------------------------------------------- reading an input file


def _xrv_models() -> Any | None:
    """torchxrayvision.models, or None when torchxrayvision is not installed (or fails to import)."""
    try:
        from torchxrayvision import models  # optional: the import command works without it
    except Exception:
        return None
    return models


def _allowed_globals() -> dict[str, Any]:
    """Every class and function the restricted unpickler hands out, by the name a pickle uses."""
    allowed: dict[str, Any] = {
        f"{obj.__module__}.{obj.__qualname__}": obj
        for obj in (*TORCH_LAYERS, nn.Parameter, torch.Size, OrderedDict, set)
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"):
        if hasattr(torch._utils, name):  # how torch pickles tensors and parameters
            allowed[f"torch._utils.{name}"] = getattr(torch._utils, name)
    allowed.update({f"torchxrayvision.models.{name}": _Inert for name in XRV_CLASSES})
    return allowed


class _Refused(pickle.UnpicklingError):
    """A pickle needs a class or function beyond _allowed_globals."""


class _RestrictedUnpickler(pickle.Unpickler):
    """The standard way to unpickle untrusted data (Python's pickle docs, "Restricting Globals"):
    only the classes and functions of _allowed_globals exist. torch resolves storage types itself."""

    allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol 2 pickles spell builtins the Python 2 way
            module = "builtins"
        obj = self.allowed.get(f"{module}.{name}")
        if obj is None:
            raise _Refused(f"it needs {module}.{name}")
        return obj


def _load_restricted(path: Path) -> Any:
    """A pickled torchxrayvision model, its layers read into _Inert and torch's own layer classes:
    torch.load with _RestrictedUnpickler as its pickle module, in the zip and the old format."""
    restricted = SimpleNamespace(
        __name__="cxrlab_restricted_pickle", Unpickler=_RestrictedUnpickler,
        load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(),
    )
    with warnings.catch_warnings():
        # Old pickles carry their classes' source; _Inert's differs, which is the point.
        warnings.simplefilter("ignore", torch.serialization.SourceChangeWarning)
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted)


def _load_pickled(path: Path, trust_pickle: bool, warn: Callable[[str], None]) -> Any:
    """A pickled model: safely when it holds only DenseNet layers, else only with trust_pickle."""
    try:
        return _load_restricted(path)
    except _Refused as e:
        refused = str(e)
    except Exception as e:
        raise ValueError(f"{path} is not a readable PyTorch file ({type(e).__name__}: {_first_line(e)})") from None
    if not trust_pickle:
        raise ValueError(
            f"{path} is a pickle holding more than tensors and torchxrayvision's DenseNet layers ({refused}), "
            "so reading it would run code from the file; if you trust where it came from, rerun with --trust_pickle "
            "(needs torchxrayvision), or pass a state dict: torch.save(model.state_dict(), PATH)"
        )
    if _xrv_models() is None:
        raise ValueError(
            f"{path} is a pickled model; loading it with --trust_pickle needs torchxrayvision (its classes): "
            "pip install torchxrayvision, or pass a state dict: torch.save(model.state_dict(), PATH)"
        )
    warn(
        f"warning: loading {path} with torch.load(weights_only=False) runs the code in its pickle; "
        "do this only for a file you trust (e.g. a torchxrayvision release)"
    )
    return torch.load(path, map_location="cpu", weights_only=False)


def _tensor_list(value: Any) -> torch.Tensor | None:
    if value is None:
        return None
    return torch.as_tensor(value, dtype=torch.float32).flatten().clone()


def _source_of(obj: Any, path: Path) -> Source:
    """The tensors, pathology names and thresholds of a loaded model or state dict."""
    pathologies: Any = None
    op_threshs: Any = None
    if isinstance(obj, nn.Module):
        # named_* rather than state_dict(): modules pickled by an old torch lack its hook attributes.
        state = {k: v.detach() for k, v in (*obj.named_parameters(), *obj.named_buffers())}
        attrs = vars(obj)  # the instance's own, not the class's default list of 18 names
        pathologies = attrs.get("pathologies", attrs.get("targets"))
        if "op_threshs" not in state:
            op_threshs = attrs.get("op_threshs")
    elif isinstance(obj, Mapping):
        if str(obj.get("format", "")).startswith("cxrlab-xrv-"):
            raise ValueError(f"{path} is already converted; use it as model.weights: {path}")
        inner = obj.get("state_dict", obj.get("model_state_dict"))
        if isinstance(inner, Mapping):
            state = dict(inner)
            pathologies, op_threshs = obj.get("pathologies"), obj.get("op_threshs")
        else:
            state = dict(obj)
    else:
        raise ValueError(f"{path} holds a {type(obj).__name__}, neither a torchxrayvision model nor a state dict")
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    if "op_threshs" in state:
        op_threshs = state.pop("op_threshs")
    if pathologies is not None:
        pathologies = [str(p) for p in pathologies]
    return Source(state, pathologies, _tensor_list(op_threshs))


def read_source(path: str | Path, trust_pickle: bool = False, warn: Callable[[str], None] = _say) -> Source:
    """Read a torchxrayvision model file or state dict (see the module docstring for how)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a torchxrayvision weights file or a state dict")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # pickled objects (or a broken pickle: _load_pickled tells)
        obj = _load_pickled(path, trust_pickle, warn)
    except Exception as e:
        raise ValueError(f"{path} is not a readable PyTorch file ({type(e).__name__}: {_first_line(e)})") from None
    return _source_of(obj, path)


# --------------------------------------------------------------------------- checking and converting


def _torchvision_model(arch: str, channels: int) -> nn.Module:
    """torchvision's `arch` with a `channels`-input first convolution: torchxrayvision's layout."""
    model = REGISTRY[arch].builder(weights=None)
    set_input_channels(model.features, channels)
    return model


def set_input_channels(features: nn.Module, channels: int) -> None:
    """Replace the first convolution of `features` by one taking `channels` input channels."""
    name, conv = next((n, m) for n, m in features.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == channels:
        return
    new = nn.Conv2d(
        channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, conv.bias is not None, conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype,
    )
    for own, old in zip(new.parameters(), conv.parameters(), strict=True):
        own.requires_grad_(old.requires_grad)  # keep the fine-tuning policy
    parent, _, child = name.rpartition(".")
    setattr(features.get_submodule(parent) if parent else features, child, new)


def _reference(arch: str) -> dict[str, torch.Size]:
    """The `features.*` shapes of torchxrayvision's `arch` (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = _torchvision_model(arch, 1)
    return {k: v.shape for k, v in model.state_dict().items() if k.startswith("features.")}


def match_features(state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Size], where: str, arch: str) -> None:
    """Every `features.*` key of `reference` in `state` with its shape, and no other features key;
    else one line naming the first key that does not match."""
    for key, shape in reference.items():
        if key not in state:
            raise ValueError(f"{where}: no tensor {key}, which torchxrayvision's {arch} has; is it a {arch}?")
        if tuple(state[key].shape) != tuple(shape):
            raise ValueError(
                f"{where}: tensor {key} has shape {list(state[key].shape)}, torchxrayvision's {arch} "
                f"has {list(shape)}"
            )
    extra = next((k for k in state if k.startswith("features.") and k not in reference), None)
    if extra is not None:
        raise ValueError(f"{where}: tensor {extra} is not in torchxrayvision's {arch}; is it a {arch}?")


def _known_weights(filename: str) -> tuple[str | None, dict[str, Any]]:
    """torchxrayvision's own name and table entry (labels, op_threshs) of one of its release files."""
    xrv = _xrv_models()
    urls = getattr(xrv, "model_urls", None) if xrv is not None else None
    if not isinstance(urls, Mapping):
        return None, {}
    found = [
        (name, entry) for name, entry in urls.items()
        if isinstance(entry, Mapping) and str(entry.get("weights_url", "")).rsplit("/", 1)[-1] == filename
    ]
    # Each file is listed under a short and a full name (all, densenet121-res224-all): prefer the full.
    found.sort(key=lambda item: (not item[0].startswith("densenet"), item[0]))
    return found[0] if found else (None, {})


def convert(
    source: Source, arch: str = "densenet121", where: str = "input", filename: str = "",
    pathologies: list[str] | None = None,
) -> dict[str, Any]:
    """The FORMAT dict of a checked source: plain tensors and lists, readable with weights_only=True."""
    if arch not in ARCHS:
        raise ValueError(f"--arch {arch!r}: torchxrayvision weights are converted for {', '.join(ARCHS)}")
    state = dict(source.state)
    reference = _reference(arch)
    for key in reference:  # BatchNorm's step counter, absent from models saved by old torch
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    match_features(state, reference, where, arch)
    if any(k not in state for k in CLASSIFIER):
        raise ValueError(f"{where}: no classifier.weight/classifier.bias; is it a torchxrayvision {arch}?")
    extra = next((k for k in state if k not in reference and k not in CLASSIFIER), None)
    if extra is not None:
        raise ValueError(f"{where}: tensor {extra} is not in torchxrayvision's {arch}; is it a {arch}?")
    weight, bias = state["classifier.weight"], state["classifier.bias"]
    n_features = reference["features.norm5.weight"][0]
    if weight.ndim != 2 or weight.shape[1] != n_features or tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"{where}: classifier.weight {list(weight.shape)} / classifier.bias {list(bias.shape)} do not "
            f"fit {n_features} features; is it a torchxrayvision {arch}?"
        )
    outputs = int(weight.shape[0])
    name, known = _known_weights(filename) if filename else (None, {})
    names = pathologies or source.pathologies or known.get("labels")
    if names is not None and len(names) != outputs:
        raise ValueError(
            f"{len(names)} pathology names for a classifier with {outputs} outputs"
            + ("; fix --pathologies" if pathologies else "")
        )
    op_threshs = source.op_threshs if source.op_threshs is not None else _tensor_list(known.get("op_threshs"))
    if op_threshs is not None and len(op_threshs) != outputs:
        op_threshs = None  # thresholds of some other model: not worth keeping
    return {
        "format": FORMAT,
        "arch": arch,
        "name": name,
        "source": filename,
        "state_dict": {k: v.detach().clone().contiguous() for k, v in state.items()},
        "pathologies": [str(p) for p in names] if names is not None else None,
        "op_threshs": op_threshs,
        "input_scale": list(INPUT_SCALE),
        "channels": int(state["features.conv0.weight"].shape[1]),
        "input_size": INPUT_SIZE,
    }


def import_weights(
    path: str | Path, out: str | Path, arch: str = "densenet121", pathologies: list[str] | None = None,
    trust_pickle: bool = False, warn: Callable[[str], None] = _say,
) -> dict[str, Any]:
    """`cxrlab models import`: read, check, convert and write; returns what was written."""
    path, out = Path(path), Path(out)
    if out.resolve() == path.resolve():
        raise ValueError(f"--out {out} is the input file; write the converted weights elsewhere")
    source = read_source(path, trust_pickle=trust_pickle, warn=warn)
    data = convert(source, arch, where=str(path), filename=path.name, pathologies=pathologies)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, out)
    return data


# --------------------------------------------------------------------------- model.weights: PATH


def read_converted(path: Path) -> dict[str, Any] | None:
    """The converted dict when `path` is a file written by `cxrlab models import`, else None."""
    if not path.is_file():
        return None
    try:  # mmap: telling a converted file from any other costs no read of its tensors
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None  # not a zip-format torch file: never one of ours; the caller reports it
    if not isinstance(obj, dict) or not str(obj.get("format", "")).startswith("cxrlab-xrv-"):
        return None
    if obj["format"] != FORMAT:
        raise ValueError(f"model.weights: {path} is {obj['format']}, this cxrlab reads {FORMAT}; import it again")
    return obj


def input_norm(scale: tuple[float, float] | list[float], channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std with (x - mean) / std = lo + x * (hi - lo): [0, 1] images to the [lo, hi] scale."""
    lo, hi = float(scale[0]), float(scale[1])
    return (-lo / (hi - lo),) * channels, (1.0 / (hi - lo),) * channels


def backbone_for(name: str, weights: str) -> Backbone:
    """What model.weights builds: torchxrayvision weights converted by `cxrlab models import`, else
    `build_backbone` (imagenet, none, or any other PATH)."""
    converted = read_converted(Path(weights)) if weights not in ("imagenet", "none") else None
    if converted is None:
        return build_backbone(name, weights)
    check_backbone_name(name)
    return xrv_backbone(name, Path(weights), converted)


def xrv_backbone(name: str, path: Path, data: dict[str, Any]) -> Backbone:
    """The backbone of a converted file: its features loaded strictly, its input scale kept."""
    arch = data.get("arch", "densenet121")
    if name != arch:
        raise ValueError(
            f"model.weights: {path} holds torchxrayvision {arch} weights; set model.backbone: {arch} (got {name!r})"
        )
    channels = int(data["channels"])
    model = _torchvision_model(arch, channels)
    own = {k: v.shape for k, v in model.state_dict().items() if k.startswith("features.")}
    state = data["state_dict"]
    match_features(state, own, f"model.weights: {path}", arch)
    model.features.load_state_dict({k.removeprefix("features."): state[k] for k in own}, strict=True)
    features, out_channels, target = REGISTRY[arch].adapter(model)
    mean, std = input_norm(data["input_scale"], channels)
    return Backbone(
        name=name,
        features=features,
        channels=out_channels,
        blocks=[n for n, _ in features.named_children()],
        target_layer=target,
        input_size=int(data.get("input_size", INPUT_SIZE)),
        mean=mean,
        std=std,
        input_from_weights=True,
    )
