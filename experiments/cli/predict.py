"""The `cxrlab predict` command line; the runner and its heavy imports: cxrlab.experiments.evaluation.predict."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cxrlab.experiments.cli.flags import add_common_flags


def cmd_predict(ns: argparse.Namespace) -> int:
    """cxrlab predict."""
    from cxrlab.experiments.evaluation.predict import format_text, predict

    results = predict(
        ns.checkpoint, ns.images, ns.heatmap, ns.lung_mask or (), ns.cutoff, ns.alpha, ns.device
    )
    if ns.json:
        payload = {"checkpoint": ns.checkpoint, "cutoff": ns.cutoff, "predictions": results}
        print(json.dumps(payload, indent=2))
    else:
        print(format_text(results, ns.cutoff))
        if not ns.heatmap:
            print("(no heatmaps written; add --heatmap DIR for each image beside its Grad-CAM overlay)")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register `cxrlab predict`."""
    p = subparsers.add_parser(
        "predict",
        help="classify images with a checkpoint (with Grad-CAM overlays)",
        description="Classify PNG, JPEG or DICOM radiographs with a checkpoint: predicted class, "
        "confidence per class, whether the top confidence reaches --cutoff, and with --heatmap an "
        "overlay PNG of the predicted class's Grad-CAM per image (inside the lung mask if given).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .ckpt written by `cxrlab train`")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (.png, .jpg, .dcm, ...)")
    p.add_argument(
        "--heatmap", metavar="DIR", default=None, help="write <image>_gradcam.png overlays into DIR"
    )
    p.add_argument(
        "--lung_mask",
        metavar="MASK",
        action="append",
        default=None,
        help="binary lung mask limiting the overlay: once for all images, or once per image",
    )
    p.add_argument(
        "--cutoff", type=float, default=0.9, help="confidence needed for a firm call [default: 0.9]"
    )
    p.add_argument(
        "--alpha", type=float, default=0.4, help="heatmap opacity of the overlay [default: 0.4]"
    )
    add_common_flags(p, "device")
    p.add_argument("--json", action="store_true", help="machine-readable JSON output")
    p.set_defaults(func=cmd_predict)
