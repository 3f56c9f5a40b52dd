"""TrustFit: at the end of fitting, fit the best checkpoint's trust model and store it in that
checkpoint, before the run recorder logs it (rank 0; nothing is computed while training)."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch

from cxrlab.callbacks import console
from cxrlab.callbacks.trust.model_trust import fit_trust
from cxrlab.config import TrustConfig
from cxrlab.lightning_modules.checkpoint import TRUST_KEY, load_classifier, read_checkpoint


class TrustFit(L.Callback):
    """Fits calibration, the out-of-distribution model and heatmap templates on the best model."""

    def __init__(self, settings: TrustConfig) -> None:
        self.settings = settings

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best or not trainer.is_global_zero or trainer.interrupted:
            return
        ckpt = read_checkpoint(best)
        model = load_classifier(best, ckpt).to(pl_module.device)
        dm = trainer.datamodule
        limit = self.settings.max_images
        trust = fit_trust(model, dm.plain_loader("train", limit), dm.plain_loader("val", limit), self.settings)
        ckpt[TRUST_KEY] = trust.to_dict()
        tmp = Path(best).with_name(f".{Path(best).name}.trust.tmp")
        torch.save(ckpt, tmp)
        os.replace(tmp, best)  # a crash mid-save keeps the checkpoint without trust, never a torn one
        ood = f"out-of-distribution threshold at {self.settings.ood_pass:.0%} of validation"
        if trust.ood_only:
            console.say(f"trust: {ood} (multi-label: validation ECE {trust.ece_before:.3f} over every finding, "
                        "probabilities left as the thresholds were chosen on them)")
        else:
            console.say(f"trust: temperature {trust.temperature:.2f} (validation ECE {trust.ece_before:.3f} -> "
                        f"{trust.ece_after:.3f}), {ood}")
