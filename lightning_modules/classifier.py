"""CXRClassifier: backbone + head + fine-tune policy as one LightningModule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassRecall,
)
from torchmetrics.utilities.distributed import gather_all_tensors

from cxrlab.config import Config, to_dict
from cxrlab.lightning_modules.eval_mode import eval_mode
from cxrlab.lightning_modules.finetune import apply_finetune
from cxrlab.lightning_modules.heads import build_head
from cxrlab.lightning_modules.label_metrics import f1_thresholds, label_scores, masked_bce
from cxrlab.lightning_modules.optimisation import configure_optimisation
from cxrlab.lightning_modules.probabilities import output_probs
from cxrlab.lightning_modules.xrv_weights import backbone_for, set_input_channels

THRESHOLDS_KEY = "cxrlab_thresholds"  # multi-label: the per-finding cuts of the checkpoint's own epoch
NORMAL_NAMES = {"normal", "healthy", "no finding", "no_finding", "negative"}


def disease_indices(classes: list[str]) -> list[int]:
    """Indices of the disease classes (all but the normal one; all if none is normal)."""
    idx = [i for i, c in enumerate(classes) if c.lower() not in NORMAL_NAMES]
    return idx if len(idx) < len(classes) else list(range(len(classes)))


class CXRClassifier(L.LightningModule):
    """A CXR classifier taking [B, 1|3, H, W] images in [0, 1] and returning class logits.

    With data.task multilabel, `classes` are findings: one sigmoid each, trained by masked BCE
    (class_weights are then the per-finding pos_weight).
    """

    def __init__(
        self, config: Config, classes: list[str], class_weights: list[float] | None = None
    ) -> None:
        super().__init__()
        # The whole resolved config travels in the checkpoint, so a checkpoint rebuilds the model
        # and its preprocessing on its own; as plain data, so weights_only=True loading reads it
        # (cxrlab.lightning_modules.checkpoint turns it back into a Config).
        self.save_hyperparameters(  # RunRecorder logs flattened, dotted params
            {"config": to_dict(config), "classes": list(classes), "class_weights": class_weights}, logger=False
        )
        self.config = config
        self.classes = list(classes)
        self.multilabel = config.data.task == "multilabel"
        m = config.model
        bb = backbone_for(m.backbone, m.weights)
        self.backbone = bb.features
        self.target_layer = "backbone" + (f".{bb.target_layer}" if bb.target_layer else "")
        # data.image_size none means the backbone's own input size.
        self.input_size = int(config.data.image_size or bb.input_size)
        # One value per input channel; kept in checkpoints only when the weights file set them
        # (torchxrayvision: 1 channel, [-1024, 1024]), which a rebuild by name cannot know.
        self.register_buffer("mean", torch.tensor(bb.mean).view(1, -1, 1, 1), persistent=bb.input_from_weights)
        self.register_buffer("std", torch.tensor(bb.std).view(1, -1, 1, 1), persistent=bb.input_from_weights)
        # Heads that keep positions (maxpool-mlp) size themselves by the feature map.
        self.head = build_head(m, bb.channels, len(classes), self._probe_feature_hw())
        self._frozen_norms = apply_finetune(self.backbone, bb.blocks, m.finetune)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self._channels_last = False
        self.run_info: dict[str, Any] = {}  # MLflow run id / URI, stored in checkpoints
        self.trust_state: dict[str, Any] | None = None  # the trust model a checkpoint carries
        # Multi-label: per finding, the F1-best probability cut on the validation split of the
        # epoch a checkpoint was saved at (what `cxrlab predict` calls present); None before any.
        self.label_thresholds: list[float] | None = None
        k = len(classes)
        self.disease_idx = disease_indices(self.classes)
        self.val_metrics = self._metrics(k)
        self.test_metrics = self._metrics(k)
        # Training logits and labels need no value checks, and each check reads the GPU (a stall per step).
        self.train_acc = MulticlassAccuracy(k, average="micro", validate_args=False)
        self._nonfinite: torch.Tensor | None = None  # a non-finite training loss since the last check
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"val": [], "test": []}
        self.last_outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def _metrics(k: int) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "acc": MulticlassAccuracy(k, average="micro"),
                "macro_f1": MulticlassF1Score(k, average="macro"),
                "recall": MulticlassRecall(k, average="none"),
                "auroc": MulticlassAUROC(k, average="macro"),
            }
        )

    def _probe_feature_hw(self) -> tuple[int, int]:
        with eval_mode(self.backbone), torch.no_grad():
            out = self.backbone(torch.zeros(1, self.mean.shape[1], self.input_size, self.input_size))
        if out.ndim != 4:
            raise ValueError(
                f"model.backbone={self.config.model.backbone!r} returns {out.ndim}-D features; "
                "cxrlab needs a CNN with [B, C, h, w] feature maps"
            )
        return int(out.shape[2]), int(out.shape[3])

    # ------------------------------------------------------------------ forward

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1|3, H, W] in [0, 1] (or uint8) -> the backbone's normalised input: 3 channels, or
        1 for torchxrayvision weights (where mean/std map [0, 1] to [-1024, 1024])."""
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        channels = self.mean.shape[1]
        if x.shape[1] == 1 and channels != 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1 and x.shape[1] != 1:
            x = x.mean(dim=1, keepdim=True)  # the grey of equal channels
        x = (x - self.mean) / self.std
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.preprocess(x)))

    def train(self, mode: bool = True) -> CXRClassifier:
        super().train(mode)
        for m in self._frozen_norms:
            m.eval()
        return self

    def on_fit_start(self) -> None:
        if self.device.type == "cuda" and self.config.trainer.channels_last:
            self._channels_last = True
            self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ steps

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return masked_bce(logits, y, self.class_weights, self.config.model.label_smoothing)
        return F.cross_entropy(
            logits.float(), y, weight=self.class_weights,
            label_smoothing=self.config.model.label_smoothing,
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = self._loss(logits, y)
        self._check_finite(loss)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(y))
        if not self.multilabel:
            self.train_acc.update(logits.detach(), y)
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Stop on a non-finite training loss: at once on the CPU; on an accelerator at the next
        log_every_n_steps step (Lightning reads the GPU there anyway), since reading it every step
        stalls the queue of GPU work the next steps would add."""
        bad = ~torch.isfinite(loss.detach())
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        every = 1 if loss.device.type == "cpu" or self._trainer is None else self.trainer.log_every_n_steps
        if (self.global_step + 1) % every == 0 and bool(self._nonfinite):
            raise FloatingPointError(f"non-finite training loss by step {self.global_step} (last loss {loss.item()})")

    def on_train_epoch_end(self) -> None:
        if self._nonfinite is not None and bool(self._nonfinite):
            raise FloatingPointError(f"non-finite training loss in epoch {self.current_epoch}")
        self._nonfinite = None

    def _eval_step(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        self.log(f"{stage}/loss", self._loss(logits, y), on_epoch=True, sync_dist=True, prog_bar=stage == "val", batch_size=len(y))
        probs = self.probabilities(logits)
        if not self.multilabel:
            metrics = self.val_metrics if stage == "val" else self.test_metrics
            for metric in metrics.values():
                metric.update(probs, y)
        self._outputs[stage].append((probs.detach(), y.detach()))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax), or one independent probability per finding (sigmoid)."""
        return output_probs(self, logits.float())

    def _eval_epoch_end(self, stage: str) -> None:
        if not self.multilabel:
            self._log_class_metrics(stage)
        # Keep the epoch's predictions (all ranks) for figures and explanation callbacks.
        outs = self._outputs[stage]
        if outs:
            probs = torch.cat([p for p, _ in outs])
            ys = torch.cat([t for _, t in outs])
            if self.trainer.world_size > 1:
                # Ranks hold different counts (no padded repeats), so gather with padding-aware code.
                probs = torch.cat(gather_all_tensors(probs))
                ys = torch.cat(gather_all_tensors(ys))
            self.last_outputs[stage] = (probs.cpu(), ys.cpu())
        outs.clear()
        if self.multilabel and stage in self.last_outputs:
            self._log_label_metrics(stage, *self.last_outputs[stage])

    def _log_label_metrics(self, stage: str, probs: torch.Tensor, ys: torch.Tensor) -> None:
        """Per-finding and macro/micro scores of the whole (gathered) split, the same on every rank."""
        scores = label_scores(probs.numpy(), ys.numpy(), self.classes)
        if stage == "val" and not self.trainer.sanity_checking:
            self.label_thresholds = f1_thresholds(probs.numpy(), ys.numpy())
        logs = {f"{stage}/{k}": v for k, v in scores.items()}
        logs[f"{stage}/auroc"] = logs[f"{stage}/macro_auroc"]
        self.log(f"{stage}/macro_auroc", logs.pop(f"{stage}/macro_auroc"), prog_bar=True)
        self.log_dict(logs)

    def _log_class_metrics(self, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        values = {name: metric.compute() for name, metric in metrics.items()}
        for metric in metrics.values():
            metric.reset()
        recall = values.pop("recall")
        logs = {f"{stage}/{k}": v for k, v in values.items()}
        for i, c in enumerate(self.classes):
            logs[f"{stage}/recall/{c}"] = recall[i]
        logs[f"{stage}/disease_recall"] = recall[self.disease_idx].mean()
        self.log(f"{stage}/macro_f1", logs.pop(f"{stage}/macro_f1"), prog_bar=True)
        self.log_dict(logs)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.probabilities(self(x))

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> Any:
        m = self.config.model
        lr = m.lr
        mult = m.backbone_lr_mult if m.finetune not in ("scratch",) else 1.0
        groups = [{"params": list(self.head.parameters()), "lr": lr, "name": "head"}]
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        if backbone:
            groups.append({"params": backbone, "lr": lr * mult, "name": "backbone"})
        # A model built from an unresolved config still hands the plateau schedule a real metric.
        task = "multilabel" if self.multilabel else "multiclass"
        trainer = self.config.trainer.model_copy(update={"monitor": self.config.trainer.monitor_for(task)})
        return configure_optimisation(groups, m, trainer)

    # ------------------------------------------------------------------ checkpoint metadata

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cxrlab"] = dict(self.run_info)
        if self.label_thresholds is not None:
            checkpoint[THRESHOLDS_KEY] = list(self.label_thresholds)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.run_info = dict(checkpoint.get("cxrlab", {}))
        self.label_thresholds = checkpoint.get(THRESHOLDS_KEY)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """nn.Module's, after adopting an input normalisation the state dict carries: a model built
        from torchxrayvision weights and rebuilt with model.weights none (load_classifier) takes
        its 1-channel first convolution and [-1024, 1024] scale back from the checkpoint."""
        if "mean" in state_dict and "std" in state_dict:
            mean, std = state_dict["mean"], state_dict["std"]
            if mean.shape[1] != self.mean.shape[1]:
                set_input_channels(self.backbone, int(mean.shape[1]))
            device = self.mean.device
            self.register_buffer("mean", mean.detach().clone().to(device), persistent=True)
            self.register_buffer("std", std.detach().clone().to(device), persistent=True)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
