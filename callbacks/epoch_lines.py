"""EpochLines: one line per validated epoch, the loss, the monitored metric, where the heatmaps
look, and the shortcut alarm's state, printed between the progress bar's updates."""

from __future__ import annotations

import math

import lightning as L

from cxrlab.callbacks import console

# (metric, label) shown when the epoch has it; focus is relative to a uniform map (1.0).
SHOWN = (("explain/lung_focus", "lung"), ("explain/border_focus", "border"), ("explain/lesion_focus", "lesion"))


class EpochLines(L.Callback):
    """Print `epoch 3/7  loss 0.41  val/macro_f1 0.84 (best 0.86)  lung 1.70  border 0.50  alarm no`."""

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor, self.mode = monitor, mode
        self.best = math.nan

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the epoch's validation and explanations, when its training loss is reduced too.
        if not trainer.is_global_zero:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 0)() == 1}
        value = m.get(self.monitor, math.nan)
        if not math.isnan(value) and (math.isnan(self.best) or (value > self.best) == (self.mode == "max")):
            self.best = value
        # 0-based, as Lightning's progress bar and the checkpoint names (best-epoch005) count.
        parts = [f"epoch {trainer.current_epoch}/{(trainer.max_epochs or 1) - 1}"]
        if "train/loss_epoch" in m:
            parts.append(f"loss {m['train/loss_epoch']:.3f}")
        parts.append(f"{self.monitor} {value:.3f} (best {self.best:.3f})")
        parts += [f"{label} {m[key]:.2f}" for key, label in SHOWN if key in m and not math.isnan(m[key])]
        if "explain/shortcut_alarm" in m:
            parts.append(f"alarm {'YES' if m['explain/shortcut_alarm'] else 'no'}")
        console.say("  ".join(parts))
