"""Rebuild a CXRClassifier from a checkpoint file alone (weights_only=True)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from cxrlab.config import Config, first_line, from_dict
from cxrlab.lightning_modules.classifier import THRESHOLDS_KEY, CXRClassifier

TRUST_KEY = "cxrlab_trust"  # the trust model fitted after training (absent in older checkpoints)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a cxrlab checkpoint safely (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found; pass the .ckpt file of a cxrlab run")
    if path.stat().st_size == 0:
        raise ValueError(
            f"{path}: checkpoint is empty (0 bytes), likely a save cut short by a crash; "
            "use another .ckpt of the run (last.ckpt or best-*.ckpt)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = next(iter(str(e).splitlines()), "")
        raise ValueError(
            f"{path}: not a readable checkpoint ({type(e).__name__}: {first}); "
            "it may be truncated or not a PyTorch file"
        ) from None
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if "config" not in hp or "classes" not in hp or "state_dict" not in ckpt:
        raise ValueError(
            f"{path}: not a cxrlab checkpoint (no config/classes/state_dict); "
            "use a .ckpt written by `cxrlab train`"
        )
    return ckpt


def checkpoint_config(path: str | Path, ckpt: dict[str, Any]) -> Config:
    """The typed config a checkpoint stores as a plain dict (older checkpoints hold the same dict)."""
    return from_dict(ckpt["hyper_parameters"]["config"], f"{path} (config stored in the checkpoint)")


def load_classifier(path: str | Path, ckpt: dict[str, Any] | None = None) -> CXRClassifier:
    """Rebuild the model a checkpoint was trained as, in eval mode on the CPU."""
    ckpt = ckpt if ckpt is not None else read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    config = checkpoint_config(path, ckpt)
    # The weights come from the checkpoint; never re-download or re-read the original source.
    build = copy.deepcopy(config)
    build.model.weights = "none"
    model = CXRClassifier(build, hp["classes"], hp.get("class_weights"))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the model in its config ({first_line(e)})") from None
    model.config = config
    model.run_info = dict(ckpt.get("cxrlab", {}))
    model.trust_state = ckpt.get(TRUST_KEY)  # plain tensors; None before trust models existed
    model.label_thresholds = ckpt.get(THRESHOLDS_KEY)  # multi-label only
    return model.eval()


SLIM_KEYS = ("state_dict", "hyper_parameters", "cxrlab", TRUST_KEY, THRESHOLDS_KEY, "epoch", "global_step", "pytorch-lightning_version")


def slim_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Copy a Lightning checkpoint without optimizer/loop state: what evaluate and predict need."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    torch.save({k: ckpt[k] for k in SLIM_KEYS if k in ckpt}, dst)
    return Path(dst)
