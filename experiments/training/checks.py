"""Cross-field checks of a whole config, run when it loads, before any run or worker starts.

The schema (cxrlab.config) checks each value alone; these checks need the backbone registry (the
backbone's native input size and feature-map size), and so live above the models.
"""

from __future__ import annotations

from cxrlab.callbacks.explanations.aopc import check_grid
from cxrlab.callbacks.explanations.occlusion import check_occlusion
from cxrlab.config import Config, ConfigError, check_registered, flatten, last_n, shown, to_dict
from cxrlab.lightning_modules.backbones import backbone_blocks, default_input_size, feature_map_size
from cxrlab.lightning_modules.heads import check_pool

MONITOR_PREFIXES = ("val/", "explain/")


def check_config(cfg: Config, where: str = "config") -> Config:
    """Raise ConfigError (one line, naming the keys and the fix) when settings contradict."""
    check_registered(cfg, where)  # a Config built in code, not by from_dict, has not met its registries
    try:
        _check(cfg)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg


def _check(cfg: Config) -> None:
    m, t, x = cfg.model, cfg.trainer, cfg.explain
    size = cfg.data.image_size or default_input_size(m.backbone)
    feature_hw = feature_map_size(m.backbone, size)  # also fails, naming the keys, on too small an input
    if m.head == "maxpool-mlp":
        check_pool(m.pool, feature_hw, f" of {m.backbone} at {size} px")
    if (n := last_n(m.finetune)) is not None:
        blocks = backbone_blocks(m.backbone)
        if n > len(blocks):
            raise ValueError(
                f"model.finetune={m.finetune!r} but {m.backbone} has {len(blocks)} blocks "
                f"({', '.join(blocks)}); use last:1..last:{len(blocks)}, or full"
            )
    if t.monitor != "auto" and not t.monitor.startswith(MONITOR_PREFIXES):
        raise ValueError(
            f"trainer.monitor={t.monitor!r} is not a validation metric; use auto, val/macro_f1, val/acc, "
            "val/auroc, val/macro_auroc (multilabel), val/loss or an explain/* metric"
        )
    if t.monitor.startswith("explain/") and not x.enabled:
        raise ValueError(f"trainer.monitor={t.monitor!r} needs explain.enabled: true")
    if x.enabled:
        check_grid(size, size, x.aopc.region, x.aopc.steps)
    # Always: the sanity checks run occlusion by default, also with the epoch-end explanations off.
    check_occlusion(size, size, x.occlusion.window, x.occlusion.stride)


# What --resume may change: how long and how it trains, where it records, what it explains, where
# the data is mounted and how it is loaded. Never what is trained (model, classes, splits, seed):
# the checkpoint's weights and optimizer state belong to those.
RESUME_MAY_CHANGE = (
    "trainer.", "tracking.", "explain.", "data.root", "data.num_workers", "data.batch_size", "data.cache",
    "data.pin_memory", "data.persistent_workers", "data.start_method", "data.verify_images",
)


def check_resume(stored: Config, resumed: Config, where: str) -> None:
    """Refuse, in one line naming the key, an override that changes what the checkpoint trained."""
    before, after = flatten(to_dict(stored)), flatten(to_dict(resumed))
    for key, value in after.items():
        if value != before.get(key) and not key.startswith(RESUME_MAY_CHANGE):
            raise ConfigError(
                f"{where}: --resume cannot change {key} (trained with {shown(before.get(key))}, "
                f"got {shown(value)}); drop --{key}, or train a new run with it"
            )
