"""cxrlab: experiment-tracking training for explainable chest X-ray classification.

The public API (see the README's "Python API"):

- explanation maths on any model that maps [0, 1] images to logits: `grad_cam`, `eigen_heatmaps`,
  `aopc`, `mask_focus`, `region_focus`, `shortcut_verdict`, and `heatmap_method` to add a method;
- models and data: `load_classifier`, `CXRClassifier`, `CXRDataModule`;
- configuration: `Config`, `load_config`.

The parts live in sub-packages named for their layer, bottom to top: `cxrlab.config`,
`cxrlab.datamodules` and `cxrlab.lightning_modules`, `cxrlab.callbacks`, `cxrlab.experiments`.
Names are imported on first use, so that `import cxrlab.config` (what a command checks a config
with, before anything heavy) does not pull in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cxrlab.config.registry import load_builtins_with

if TYPE_CHECKING:
    from cxrlab.callbacks.explanations.aopc import aopc
    from cxrlab.callbacks.explanations.eigen import eigen_heatmaps
    from cxrlab.callbacks.explanations.focus import mask_focus, region_focus
    from cxrlab.callbacks.explanations.gradcam import grad_cam
    from cxrlab.callbacks.explanations.methods import heatmap_method
    from cxrlab.callbacks.explanations.shortcut import shortcut_verdict
    from cxrlab.config import Config, load_config
    from cxrlab.datamodules.datamodule import CXRDataModule
    from cxrlab.lightning_modules.checkpoint import load_classifier
    from cxrlab.lightning_modules.classifier import CXRClassifier

__all__ = [
    "CXRClassifier", "CXRDataModule", "Config", "aopc", "eigen_heatmaps", "grad_cam", "heatmap_method",
    "load_classifier", "load_config", "mask_focus", "region_focus", "shortcut_verdict",
]


def _register_builtins() -> None:
    """Import the modules whose decorators register the built-in choices (a registry's first use)."""
    import cxrlab.callbacks.explanations  # noqa: F401  heatmap methods
    import cxrlab.datamodules.sources  # noqa: F401  data sources
    import cxrlab.lightning_modules.heads  # noqa: F401  model heads
    import cxrlab.lightning_modules.optimisation  # noqa: F401  optimisers and schedules


load_builtins_with(_register_builtins)


def __getattr__(name: str) -> Any:
    """The public API, imported on first use."""
    if name in ("aopc", "eigen_heatmaps", "grad_cam", "heatmap_method", "mask_focus", "region_focus", "shortcut_verdict"):
        from cxrlab.callbacks import explanations

        return getattr(explanations, name)
    if name in ("Config", "load_config"):
        from cxrlab import config

        return getattr(config, name)
    if name == "CXRDataModule":
        from cxrlab.datamodules.datamodule import CXRDataModule

        return CXRDataModule
    if name == "load_classifier":
        from cxrlab.lightning_modules.checkpoint import load_classifier

        return load_classifier
    if name == "CXRClassifier":
        from cxrlab.lightning_modules.classifier import CXRClassifier

        return CXRClassifier
    raise AttributeError(f"module 'cxrlab' has no attribute {name!r}")
