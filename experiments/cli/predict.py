"""The `cxrlab predict` command line; the runner and its heavy imports: cxrlab.experiments.evaluation.predict."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cxrlab.experiments.cli.flags import CHECKPOINT_HELP, add_common_flags


def cmd_predict(ns: argparse.Namespace) -> int:
    """cxrlab predict."""
    from cxrlab.experiments.evaluation.predict import format_text, predict
    from cxrlab.experiments.tracking.checkpoints import local_checkpoint

    checkpoint = local_checkpoint(ns.checkpoint, ns.tracking_uri)  # runs:/ and models:/ from the store
    results = predict(
        checkpoint, ns.images, ns.heatmap, ns.lung_mask or (), ns.cutoff, ns.alpha, ns.device, ns.force
    )
    if ns.json:
        payload = {"checkpoint": ns.checkpoint, "cutoff": ns.cutoff, "predictions": results}
        print(json.dumps(payload, indent=2))
    else:
        print(format_text(results, ns.cutoff))
        if not ns.heatmap:
            print("(no heatmaps written; add --heatmap DIR for each image beside its Grad-CAM overlay)")
    return 1 if any(r["label"] is None for r in results) else 0  # a refused image is a failed one


def add_parser(subparsers: Any) -> None:
    """Register `cxrlab predict`."""
    p = subparsers.add_parser(
        "predict",
        help="classify images with a checkpoint (with Grad-CAM overlays)",
        description="Classify PNG, JPEG or DICOM radiographs with a checkpoint: predicted class, "
        "calibrated confidence per class, whether the top confidence reaches --cutoff, and how far each "
        "prediction can be trusted: in or out of the training distribution, a typical or atypical "
        "heatmap, a shortcut flag. With --heatmap an overlay PNG of the predicted class's Grad-CAM per "
        "image (inside the lung mask if given). Exits 1 when an image was refused.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
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
    add_common_flags(p, "device", "tracking_uri")
    p.add_argument(
        "--force", action="store_true",
        help="predict DICOMs whose header is no frontal chest film (Modality CT, a lateral view, ...) "
        "anyway; their rows say so [default: refuse them]",
    )
    p.add_argument("--json", action="store_true", help="machine-readable JSON output, every trust field included")
    p.set_defaults(func=cmd_predict)
