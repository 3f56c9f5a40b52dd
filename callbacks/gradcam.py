"""Public face of the Grad-CAM maths, kept at its first published path for external code.

The implementation lives in callbacks.explanations.gradcam, beside the other explanation maths.
"""

from callbacks.explanations.gradcam import activation_map, grad_cam, grad_cam_pp, resolve_layer

__all__ = ["activation_map", "grad_cam", "grad_cam_pp", "resolve_layer"]
