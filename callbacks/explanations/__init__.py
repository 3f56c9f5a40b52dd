"""The explanation maths: plain functions on any model that maps [0, 1] images to logits.

Heatmap methods register themselves (`heatmap_method`); importing this package registers the
built-in ones.
"""

from cxrlab.callbacks.explanations.aopc import aopc, aopc_with_baseline
from cxrlab.callbacks.explanations.eigen import eigen_heatmaps
from cxrlab.callbacks.explanations.focus import body_mask, mask_focus, region_focus
from cxrlab.callbacks.explanations.gradcam import (
    activation_map,
    grad_cam,
    grad_cam_pp,
    resolve_layer,
)
from cxrlab.callbacks.explanations.methods import HeatmapMethod, heatmap_method, heatmaps, of_class
from cxrlab.callbacks.explanations.shortcut import ShortcutVerdict, shortcut_verdict

__all__ = [
    "HeatmapMethod", "ShortcutVerdict", "activation_map", "aopc", "aopc_with_baseline", "body_mask",
    "eigen_heatmaps", "grad_cam", "grad_cam_pp", "heatmap_method", "heatmaps", "mask_focus", "of_class",
    "region_focus", "resolve_layer", "shortcut_verdict",
]
