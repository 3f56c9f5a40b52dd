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
from cxrlab.callbacks.explanations.occlusion import check_occlusion, occlusion_map
from cxrlab.callbacks.explanations.shortcut import ShortcutVerdict, shortcut_verdict

# isort: split
# Registered last, so --help lists the model-free control after the methods that read the model.
from cxrlab.callbacks.explanations.edge import edge_map

__all__ = [
    "HeatmapMethod", "ShortcutVerdict", "activation_map", "aopc", "aopc_with_baseline", "body_mask",
    "check_occlusion", "edge_map", "eigen_heatmaps", "grad_cam", "grad_cam_pp", "heatmap_method", "heatmaps",
    "mask_focus", "occlusion_map", "of_class", "region_focus", "resolve_layer", "shortcut_verdict",
]
