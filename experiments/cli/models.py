"""`cxrlab models`: the backbone registry, and `models import` for torchxrayvision weights."""

from __future__ import annotations

import argparse


def cmd_models(ns: argparse.Namespace) -> int:
    """cxrlab models."""
    from cxrlab.lightning_modules.backbones import REGISTRY, build_backbone

    print(f"{'backbone':<20} {'input':>5}  {'normalisation':<13}" + ("  channels  blocks  Grad-CAM layer" if ns.detail else ""))
    for name in sorted(REGISTRY):
        e = REGISTRY[name]
        line = f"{name:<20} {e.input_size:>5}  {'[-1, 1]' if e.mean[0] == 0.5 else 'ImageNet':<13}"
        if ns.detail:
            bb = build_backbone(name, "none")
            line += f"  {bb.channels:>8}  {len(bb.blocks):>6}  backbone.{bb.target_layer}"
        print(line)
    print("timm:<name>          any CNN from timm (pip install 'cxrlab[timm]'), e.g. timm:legacy_xception")
    return 0


def cmd_import(ns: argparse.Namespace) -> int:
    """cxrlab models import."""
    from cxrlab.lightning_modules.xrv_weights import import_weights

    names = [p.strip() for p in ns.pathologies.split(",")] if ns.pathologies else None
    data = import_weights(ns.file, ns.out, arch=ns.arch, pathologies=names, trust_pickle=ns.trust_pickle)
    lo, hi = data["input_scale"]
    label = f" ({data['name']})" if data["name"] else ""
    print(
        f"wrote {ns.out}: torchxrayvision {data['arch']}{label}, {data['channels']}-channel input scaled to "
        f"[{lo:g}, {hi:g}] at {data['input_size']} px"
    )
    if data["pathologies"] is not None:
        shown = ", ".join(p or "(untrained)" for p in data["pathologies"])
        print(f"its classifier's {len(data['pathologies'])} outputs (kept in the file, not used as the head): {shown}")
    else:
        print("its classifier's pathology names are unknown; pass --pathologies to record them")
    print(f"train on it: --model.backbone {data['arch']} --model.weights {ns.out}")
    return 0


IMPORT_DESCRIPTION = """\
Convert torchxrayvision DenseNet-121 weights (densenet121-res224-all, -nih, -pc, -chex, -rsna,
-mimic_nb, -mimic_ch: the .pt files it caches in ~/.torchxrayvision/models_data) into a plain file
that model.weights loads with torch.load(weights_only=True); then train with
--model.backbone densenet121 --model.weights OUT. The model takes one input channel and maps its
[0, 1] images to torchxrayvision's [-1024, 1024]; the file's own classifier is kept beside the
weights with its pathology names, and cxrlab's head is built for your classes.

FILE may be a state dict (torch.save(model.state_dict(), PATH)), read as plain data, or one of
torchxrayvision's pickled models, read without running its code as long as it holds only
DenseNet layers; neither needs torchxrayvision. A pickle holding anything else needs
--trust_pickle and torchxrayvision installed. Where torchxrayvision is installed, the pathology
names and thresholds of its own release files are looked up by file name.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `cxrlab models` and its sub-command import."""
    m = sub.add_parser(
        "models", help="list the backbone registry; `models import` converts torchxrayvision weights",
        description="List the backbone registry (model.backbone names). `cxrlab models import --help` "
        "converts torchxrayvision DenseNet-121 weights for model.weights.",
    )
    m.add_argument("--detail", action="store_true", help="build each backbone to show channels, blocks and Grad-CAM layer (slower)")
    m.set_defaults(func=cmd_models)
    msub = m.add_subparsers(dest="models_command", metavar="MODELS_COMMAND")
    imp = msub.add_parser(
        "import", help="convert torchxrayvision DenseNet-121 weights into a model.weights file",
        description=IMPORT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("file", metavar="FILE", help="torchxrayvision weights: a pickled model (.pt) or a state dict of one")
    imp.add_argument("--out", required=True, metavar="OUT", help="the converted file to write (e.g. xrv-all.pt); give it as model.weights")
    imp.add_argument("--arch", default="densenet121", choices=["densenet121"], help="the network the weights are for [default: densenet121]")
    imp.add_argument(
        "--pathologies", metavar="NAMES", default=None,
        help="comma-separated names of the classifier's outputs, in order, to record in OUT (torchxrayvision's "
        "model.pathologies) [default: those FILE carries, or torchxrayvision's list for its release file]",
    )
    imp.add_argument(
        "--trust_pickle", action="store_true",
        help="FILE is a pickle holding more than DenseNet layers and you trust where it came from: load it with "
        "torch.load(weights_only=False), which runs its code (needs torchxrayvision) [default: refuse]",
    )
    imp.set_defaults(func=cmd_import)
