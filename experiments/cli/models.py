"""`cxrlab models`: the backbone registry."""

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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `cxrlab models`."""
    m = sub.add_parser("models", help="list the backbone registry")
    m.add_argument("--detail", action="store_true", help="build each backbone to show channels, blocks and Grad-CAM layer (slower)")
    m.set_defaults(func=cmd_models)
