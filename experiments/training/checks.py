"""Cross-field checks of a whole config, run when it loads, before any run or worker starts.

The schema (experiments.config) checks each value alone; these checks need the model registry
(the backbone's native input size and feature-map size) and the dataset source registry, and so
live above both.
"""

from __future__ import annotations

from callbacks.explanations.explanation import check_aopc_grid
from datamodules.sources import get_source
from experiments.config import Config, ConfigError, last_n
from lightning_modules.backbones import backbone_blocks, default_input_size, feature_map_size

MONITOR_PREFIXES = ("val/", "explain/")


def check_config(cfg: Config, where: str = "config") -> Config:
    """Raise ConfigError (one line, naming the keys and the fix) when settings contradict."""
    try:
        _check(cfg)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg


def _check(cfg: Config) -> None:
    m, t, x = cfg.model, cfg.trainer, cfg.explain
    if cfg.data.source != "auto":
        get_source(cfg.data.source)  # an unknown name fails here, with the closest one
    size = cfg.data.image_size or default_input_size(m.backbone)
    h, w = feature_map_size(m.backbone, size)
    if m.head == "maxpool-mlp" and m.pool > min(h, w):
        raise ValueError(
            f"model.pool={m.pool} is larger than the {h}x{w} feature map of {m.backbone} at {size} px; "
            "lower model.pool or raise data.image_size"
        )
    if (n := last_n(m.finetune)) is not None:
        blocks = backbone_blocks(m.backbone)
        if n > len(blocks):
            raise ValueError(
                f"model.finetune={m.finetune!r} but {m.backbone} has {len(blocks)} blocks "
                f"({', '.join(blocks)}); use last:1..last:{len(blocks)}, or full"
            )
    if not t.monitor.startswith(MONITOR_PREFIXES):
        raise ValueError(
            f"trainer.monitor={t.monitor!r} is not a validation metric; use val/macro_f1, val/acc, "
            "val/auroc, val/loss or an explain/* metric"
        )
    if t.monitor.startswith("explain/") and not x.enabled:
        raise ValueError(f"trainer.monitor={t.monitor!r} needs explain.enabled: true")
    if x.enabled:
        check_aopc_grid(size, x.aopc.region, x.aopc.steps)
