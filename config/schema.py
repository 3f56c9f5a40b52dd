"""The experiment config: one pydantic model per section, each field with its default, help and range."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from cxrlab.config import choices
from cxrlab.config.errors import ConfigError, did_you_mean, invalid
from cxrlab.config.lenient import loosen
from cxrlab.config.registry import HEADS, METHODS, OPTIMIZERS, SCHEDULERS, SOURCES
from cxrlab.config.secrets import refuse_password


class Section(BaseModel):
    """A config section: unknown keys are errors, and command-line text is read leniently."""

    # Numbers become strings where a string is expected (trainer.devices: 2 means "2").
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    @field_validator("*", mode="before")
    @classmethod
    def _loosen(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields[info.field_name]
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        return loosen(value, field.annotation, join_list=bool(extra.get("join_list")))


class AugmentConfig(Section):
    """Training-time augmentation (applied to the train split only)."""

    shift: float = Field(0.0, description="max translation as a fraction of the image side (0.2 = 20 %)", ge=0, le=1)
    zoom: float = Field(0.0, description="max zoom in/out as a fraction (0.1 = scale in [0.9, 1.1])", ge=0, lt=1)
    rotate: float = Field(0.0, description="max rotation in degrees", ge=0, le=180)
    shear: float = Field(0.0, description="max shear in degrees", ge=0, lt=90)
    brightness: float = Field(0.0, description="max brightness jitter as a fraction", ge=0, le=1)
    contrast: float = Field(0.0, description="max contrast jitter as a fraction", ge=0, le=1)
    hflip: bool = Field(False, description="random horizontal flips (off by default: anatomy is not symmetric)")
    vflip: bool = Field(False, description="random vertical flips")


class DataConfig(Section):
    """Where the images are and how they are split, balanced, loaded and transformed."""

    source: Annotated[str, SOURCES] = Field(
        "auto", description="dataset adapter: auto (detected from data.root) or a source that `cxrlab data sources` lists"
    )
    root: str | None = Field(None, description="dataset root: a folder, or a CSV file for source=csv")
    official_split: bool = Field(
        False, description="use the dataset's own split (coronahack, kermany, covidx, a CSV split column) instead "
        "of data.split/folds; without an official val, val is carved from train by patient"
    )
    strict: bool = Field(
        False, description="stop with an error naming the file instead of skipping it (missing file or mask, CT "
        "or excluded view, label outside the source's map, image below data.min_image_size, unreadable, duplicate)"
    )
    min_image_size: int = Field(64, description="skip images whose shorter side has fewer pixels than this", ge=1)
    allow_outside_root: bool = Field(False, description="accept CSV paths and symlinks that resolve outside data.root")
    views: list[str] = Field(
        ["PA", "AP", "AP Supine", "AP semi erect", "AP erect"],
        description="views kept where a source records them (cohen); lateral L is left out",
    )
    modalities: list[str] = Field(
        ["X-ray"], description="modalities kept where a source records them (cohen); CT is left out"
    )
    combine: dict[str, str] = Field(
        {}, description="source=combine: {source: folder under data.root}; empty = every sub-folder auto detects"
    )
    combine_labels: dict[str, list[str]] = Field(
        {}, description="source=combine: keep only these labels of a part, e.g. {cohen: [covid]}"
    )
    task: choices.Task = Field(
        "auto", description="multiclass = one label per image (softmax); multilabel = any number of findings per "
        "image (a sigmoid each, masked BCE); auto = multilabel when the source has finding columns (nih, chexpert, "
        "mimic_cxr_jpg, padchest, rsna_pneumonia, a CSV with finding:<name> columns)"
    )
    labels: list[str] | None = Field(
        None, description="multilabel: the findings to train on, in output order (default: the dataset's own list)"
    )
    uncertain: choices.Uncertain = Field(
        "ignore", description="multilabel: an uncertain (-1) label is masked out of the loss (ignore), or counted "
        "as present (ones) or absent (zeros); a blank label is always masked"
    )
    uncertain_by_label: dict[str, choices.Uncertain] = Field(
        {}, description="multilabel: data.uncertain per finding, e.g. {Atelectasis: ones, Edema: ones}"
    )
    classes: list[str] | None = Field(None, description="class names in output order (default: sorted labels found)")
    label_map: dict[str, str] = Field(
        {}, description="rename/merge labels first, e.g. {bacteria: pneumonia, virus: pneumonia}"
    )
    other_labels: choices.OtherLabels = Field(
        "error", description="labels not in data.classes: stop with an error, or drop them (select a task)"
    )
    image_size: int | None = Field(None, description="square input side in pixels (default: the backbone's)", ge=16)
    split: list[float] = Field([0.8, 0.1, 0.1], description="holdout fractions train,val,test (ignored with folds)")
    folds: int | None = Field(None, description="k for k-fold cross-validation (patient-grouped, stratified)", ge=2)
    fold: int = Field(0, description="which fold is the validation fold, 0..folds-1", ge=0)
    balance: choices.Balance = Field(
        "none",
        description="class balancing: downsample = the whole table, before splitting; oversample = the train "
        "split; augment_minority = each minority train image once more, augmented",
    )
    class_weights: bool = Field(False, description="weight the loss by inverse train-class frequency")
    crop_margin: float = Field(
        0.0, description="crop this fraction from every border first (burnt-in text)", ge=0, lt=0.5
    )
    verify_images: bool = Field(True, description="decode-check every image at setup; skip and count bad ones")
    dicom_window: choices.DicomWindow = Field(
        "auto",
        description="DICOM intensities after the modality LUT: voi = the file's VOI LUT or window (min-max "
        "without one); percentile = data.dicom_percentiles of the pixels become black and white; auto = voi, "
        "but percentile for CR/DX/RG files of more than 8 bits whose window is missing or spans the detector range",
    )
    dicom_percentiles: list[float] = Field(
        [0.5, 99.5], description="low,high pixel percentiles that percentile windowing maps to black and white"
    )
    max_pixels: int = Field(
        50_000_000, description="skip, unread, images whose header declares more pixels (decompression bombs)", ge=1
    )
    cache: str | None = Field(
        None, description="decode cache folder: each image decoded, cropped and resized once to 8 bits, then "
        "read memory-mapped by every epoch, run and sweep worker"
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="training augmentation")
    batch_size: int = Field(32, description="images per batch (per device)", ge=1)
    num_workers: int = Field(2, description="DataLoader worker processes", ge=0)
    start_method: choices.StartMethod = Field(
        "auto", description="how loader workers start (auto = the platform's default)"
    )
    pin_memory: bool = Field(True, description="pinned host memory for faster GPU copies (ignored on CPU)")
    persistent_workers: bool = Field(True, description="keep loader workers alive between epochs")

    @model_validator(mode="before")
    @classmethod
    def _official_split_spelling(cls, raw: Any) -> Any:
        """`data.split: official` is read as `data.official_split: true` (the resolved spelling)."""
        if isinstance(raw, dict) and isinstance(raw.get("split"), str) and raw["split"].strip() == "official":
            raw = {k: v for k, v in raw.items() if k != "split"} | {"official_split": True}
        return raw

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.folds is None:
            split = self.split
            if len(split) not in (2, 3) or any(s < 0 for s in split) or abs(sum(split) - 1) > 1e-6:
                raise invalid(
                    f"data.split={split} must be 2 or 3 non-negative fractions summing to 1 (e.g. [0.8, 0.1, 0.1])"
                )
        elif self.fold >= self.folds:
            raise invalid(f"data.fold={self.fold} must be in 0..{self.folds - 1}")
        low_high = self.dicom_percentiles
        if len(low_high) != 2 or not 0 <= low_high[0] < low_high[1] <= 100:
            raise invalid(
                f"data.dicom_percentiles={low_high} must be two percentiles low < high in [0, 100] (e.g. [0.5, 99.5])"
            )
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise invalid(f"data.classes has duplicates: {self.classes}")
        if self.other_labels == "drop" and self.classes is None:
            raise invalid("data.other_labels=drop needs data.classes (the labels to keep)")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise invalid(f"data.labels has duplicates: {self.labels}")
        if self.task == "multiclass" and (self.labels is not None or self.uncertain_by_label):
            raise invalid("data.labels and data.uncertain_by_label are for data.task: multilabel; drop them")
        if self.official_split and self.folds is not None:
            raise invalid(f"data.official_split and data.folds={self.folds} exclude each other; drop one")
        return self


class ModelConfig(Section):
    """Backbone, head, fine-tuning policy and optimiser."""

    backbone: str = Field("resnet18", description="registry name (see `cxrlab models`) or timm:<name>")
    weights: str = Field(
        "none", description="imagenet, none, or the PATH of a state dict, a cxrlab checkpoint, or torchxrayvision "
        "DenseNet-121 weights converted by `cxrlab models import` (backbone densenet121; 1-channel input scaled "
        "to [-1024, 1024], no ImageNet mean/std)"
    )
    head: Annotated[str, HEADS] = Field("gap-linear", description="classification head on the backbone's feature maps")
    hidden: int = Field(256, description="hidden units of the mlp heads", ge=1)
    pool: int = Field(4, description="max-pool kernel and stride of the maxpool-mlp head", ge=1)
    dropout: float = Field(0.0, description="dropout before the last linear layer", ge=0, lt=1)
    finetune: str = Field(
        "full", description="which backbone parameters train; last:N trains the last N backbone blocks",
        json_schema_extra={"choices": choices.finetune_options()},
    )
    backbone_lr_mult: float = Field(1.0, description="backbone learning rate = lr x this (full / last:N)", ge=0)
    optimizer: Annotated[str, OPTIMIZERS] = Field("adam", description="optimiser")
    lr: float = Field(1e-3, description="learning rate of the head", gt=0)
    weight_decay: float = Field(0.0, description="weight decay", ge=0)
    momentum: float = Field(0.9, description="momentum (sgd, rmsprop)", ge=0, lt=1)
    scheduler: Annotated[str, SCHEDULERS] = Field("none", description="learning-rate schedule")
    label_smoothing: float = Field(0.0, description="label smoothing of the cross-entropy loss", ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if not choices.is_finetune(self.finetune):
            fixed = choices.finetune_options()[:-1]
            raise invalid(
                f"model.finetune={self.finetune!r}; use {', '.join(fixed)} or last:N with N >= 1"
                f"{did_you_mean(self.finetune, fixed)}"
            )
        if self.finetune == "scratch" and self.weights != "none":
            raise invalid(
                f"model.finetune=scratch trains from random init; set model.weights: none (got {self.weights!r})"
            )
        return self


class TrainerConfig(Section):
    """Lightning Trainer settings plus checkpoint / early-stopping policy."""

    max_epochs: int = Field(10, description="training epochs", ge=1)
    accelerator: str = Field("auto", description="auto, or a Lightning accelerator: cpu, gpu, cuda, mps")
    devices: str = Field(
        "auto", description="auto, a count (2) or a list of device ids (0,1)", json_schema_extra={"join_list": True}
    )
    strategy: str = Field("auto", description="auto, or a Lightning strategy such as ddp, ddp_spawn")
    num_nodes: int = Field(1, description="nodes for multi-node DDP (torchrun / SLURM set the rest)", ge=1)
    precision: str = Field(
        "auto", description="auto (bf16-mixed on CUDA, 32 on CPU), or a Lightning precision such as 32-true, 16-mixed"
    )
    channels_last: bool = Field(True, description="channels_last memory format on CUDA")
    limit_train_batches: float = Field(
        1.0, description="fraction of train batches per epoch (1.0 = all) or a count (2, 3, ...)", gt=0
    )
    limit_val_batches: float = Field(
        1.0, description="fraction of validation batches (1.0 = all) or a count (2, 3, ...)", gt=0
    )
    limit_test_batches: float = Field(
        1.0, description="fraction of test batches (1.0 = all) or a count (2, 3, ...)", gt=0
    )
    fast_dev_run: bool = Field(False, description="one batch of each loop; disables loggers and checkpoints")
    log_every_n_steps: int = Field(10, description="how often train metrics are logged", ge=1)
    accumulate_grad_batches: int = Field(1, description="gradient accumulation", ge=1)
    gradient_clip_val: float | None = Field(None, description="clip gradient norm at this value", gt=0)
    deterministic: bool = Field(False, description="deterministic algorithms (slower)")
    monitor: str = Field(
        "auto", description="metric that picks the best checkpoint and early-stops (auto = val/macro_f1, or "
        "val/macro_auroc for data.task: multilabel)"
    )
    mode: choices.Mode = Field("max", description="direction of the monitor")
    patience: int | None = Field(None, description="early-stopping patience in epochs (none = off)", ge=1)
    enable_progress_bar: bool = Field(True, description="show the progress bar")

    def monitor_for(self, task: str) -> str:
        """The monitor, with auto read as the task's own (val/macro_auroc for multilabel, else val/macro_f1)."""
        if self.monitor != "auto":
            return self.monitor
        return "val/macro_auroc" if task == "multilabel" else "val/macro_f1"


class TrackingConfig(Section):
    """Where runs are recorded."""

    uri: str | None = Field(
        None, description="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db); "
        "a server login goes in MLFLOW_TRACKING_USERNAME/_PASSWORD, never in the URI"
    )

    @field_validator("uri")
    @classmethod
    def _no_password(cls, uri: str | None) -> str | None:
        try:
            refuse_password(uri, "tracking.uri")
        except ConfigError as e:
            raise invalid(str(e)) from None
        return uri
    experiment: str = Field("cxrlab", description="MLflow experiment name")
    run_name: str | None = Field(None, description="MLflow run name (default: backbone-head-finetune)")
    log_checkpoint: bool = Field(True, description="upload the best checkpoint as an artifact and as the run's logged model")
    checkpoint_dir: str | None = Field(
        None, description="folder for checkpoints; a shared one lets --resume run on another node "
        "(default: beside a SQLite store, else ./mlruns/checkpoints)"
    )
    upload_last: bool = Field(
        True, description="with a tracking server (http/https), upload last.ckpt to the run after every epoch, "
        "so --resume runs:/RUN_ID/checkpoints/last.ckpt works on any node"
    )


class AOPCConfig(Section):
    """AOPC faithfulness settings."""

    region: int = Field(34, description="side of the square perturbation regions, in input pixels", ge=1)
    steps: int = Field(10, description="perturbation steps L", ge=1)
    perturb: choices.Perturb = Field("noise", description="what a perturbed region becomes")
    sigma: float = Field(0.1, description="std of the Gaussian noise in [0,1] pixel space", gt=0)
    random_seeds: int = Field(
        1, description="seeds of the random-order baseline (each costs as much as MoRF)", ge=1
    )


class OcclusionConfig(Section):
    """Occlusion sensitivity: how far each class's probability drops while a square of the input is hidden."""

    window: int = Field(16, description="side of the hiding square, in input pixels", ge=1)
    stride: int = Field(
        8, description="step between squares, in input pixels; at most the window, so every pixel is hidden at least once", ge=1
    )


class SanityConfig(Section):
    """Sanity checks of the heatmap methods (`cxrlab explain sanity`, `cxrlab evaluate --explain`)."""

    methods: list[Annotated[str, METHODS]] = Field(
        ["gradcam", "gradcampp", "activation", "occlusion"],
        description="methods to check; the model-free edge control is always checked beside them",
    )
    per_class: int = Field(4, description="images per class the checks run on", ge=1)
    bound: float = Field(
        0.5,
        description="a method passes model randomisation when its maps' rank correlation with the trained "
        "model's falls below this once the top half of the network is randomised",
        gt=0, lt=1,
    )
    stages: int | None = Field(
        None, description="blocks randomised from the head down, one stage each (default: every block)", ge=1
    )


class AlarmConfig(Section):
    """Shortcut alarm: which heatmaps count as reading outside the anatomy, and how many make the model suspect."""

    enabled: bool = Field(True, description="check for a shortcut (evaluate runs it even without --explain)")
    min_lung_focus: float = Field(
        0.75, description="flag an image whose lung focus is below this (masks needed; 1 = uniform)", ge=0
    )
    max_border_focus: float = Field(1.5, description="flag an image whose border focus is above this", gt=0)
    max_corner_focus: float = Field(2.0, description="flag an image whose corner focus is above this", gt=0)
    max_outside_body_focus: float = Field(
        1.5, description="flag an image whose outside-body focus is above this", gt=0
    )
    max_share: float = Field(
        0.25, description="the alarm fires when more than this share of explained images is flagged", ge=0, lt=1
    )


class ExplainConfig(Section):
    """Epoch-end explanations computed on a fixed probe set of the validation split."""

    enabled: bool = Field(True, description="run the explanation callback")
    every_n_epochs: int = Field(1, description="explain every N validation epochs (and always at the last)", ge=1)
    probe_per_class: int = Field(8, description="probe images per class drawn from the validation split", ge=1)
    methods: list[Annotated[str, METHODS]] = Field(["gradcam"], description="heatmap methods (the first drives AOPC and focus)")
    target_layer: str | None = Field(None, description="module name of the Grad-CAM layer (default: registry's)")
    aopc: AOPCConfig = Field(default_factory=AOPCConfig, description="AOPC settings")
    eigen: bool = Field(True, description="eigen-heatmaps (per-class PCA) and average-heatmap figures")
    road: bool = Field(
        False, description="ROAD gap of the first method at every explained epoch (explain/road_gap, a sweep "
        "objective); each image and step costs a sparse solve, seconds per image at 224 px",
    )
    display_size: int = Field(224, description="side of heatmaps for eigen-heatmaps and figures", ge=8)
    border_width: float = Field(
        0.1, description="width of the image border (where text and markers sit) as a fraction of the side",
        gt=0, lt=0.5,
    )
    corner_size: float = Field(
        0.15, description="side of each corner square as a fraction of the image side", gt=0, le=0.5
    )
    alarm: AlarmConfig = Field(default_factory=AlarmConfig, description="shortcut alarm")
    occlusion: OcclusionConfig = Field(default_factory=OcclusionConfig, description="occlusion sensitivity")
    sanity: SanityConfig = Field(default_factory=SanityConfig, description="sanity checks of the heatmap methods")


class TrustConfig(Section):
    """What the model learns about its own inputs at the end of fitting, so every prediction says
    how far it can be trusted (out-of-distribution score, calibration, typical explanation)."""

    enabled: bool = Field(True, description="fit the trust model on the validation split after training")
    ood_pass: float = Field(
        0.95, description="share of validation images the out-of-distribution threshold lets pass", gt=0.5, lt=1
    )
    typical_pass: float = Field(
        0.95, description="share of correct validation images whose heatmap counts as typical", gt=0.5, lt=1
    )
    max_images: int = Field(2048, description="validation images the trust model is fitted on at most", ge=8)


class Config(Section):
    """One experiment."""

    seed: int = Field(0, description="seed for splits, sampling and weight init", ge=0)
    data: DataConfig = Field(default_factory=DataConfig, description="dataset and loading")
    model: ModelConfig = Field(default_factory=ModelConfig, description="model and optimiser")
    trainer: TrainerConfig = Field(default_factory=TrainerConfig, description="trainer")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow tracking")
    explain: ExplainConfig = Field(default_factory=ExplainConfig, description="explanations")
    trust: TrustConfig = Field(default_factory=TrustConfig, description="trust in each prediction")
