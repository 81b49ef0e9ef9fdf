"""The typed groups of `fus2net-train`'s config: choices, ranges and the fixed keys of each
group, as OmegaConf dataclasses (`experiment.config_schema` checks a config against them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

from fus2net.data.imageio import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MIN_IMAGE_SIZE

# ------------------------------------------------------------------------------ choices


class Cache(Enum):
    memory = "memory"
    disk = "disk"
    none = "none"


class Resize(Enum):  # = fus2net.data.resizing.RESIZE_MODES (tested)
    stretch = "stretch"
    pad = "pad"


class OnBadImage(Enum):
    error = "error"
    skip = "skip"


class Scoring(Enum):
    ensemble = "ensemble"
    refit = "refit"


class Checkpoint(Enum):
    last = "last"
    best = "best"


class BalanceMode(Enum):
    flip = "flip"
    none = "none"
    weighted = "weighted"


class BalanceStrategy(Enum):
    loss = "loss"
    sampler = "sampler"


class Calibration(Enum):  # = fus2net.evaluation.calibration.CALIBRATION_METHODS (tested)
    platt = "platt"
    temperature = "temperature"
    none = "none"


class Tta(Enum):  # = fus2net.inference.tta.TTA_MODES (tested)
    none = "none"
    hflip = "hflip"


class ExternalOverlap(Enum):  # an external set's images that the training pool holds too
    drop = "drop"
    keep = "keep"


class CamTarget(Enum):
    predicted = "predicted"
    malignant = "malignant"


class Pool(Enum):  # = fus2net.models.fus2net.PoolMode (tested)
    auto = "auto"
    avg8 = "avg8"
    adaptive = "adaptive"


def rule(default: Any = MISSING, **rules: Any) -> Any:
    """A dataclass field whose value must also keep `rules`: ge, gt, le, lt (bounds; on every
    element of a list), choices (a collection, or a callable giving one), nonempty, whole (a
    number field that takes integers only, 1e8 included), listed_by (where a long list of
    choices is found, said instead of listing it)."""
    return field(default=default, metadata=rules)


def _lightning_accelerators() -> list[str]:
    from pytorch_lightning.accelerators import AcceleratorRegistry

    return sorted({*AcceleratorRegistry.available_accelerators(), "auto", "gpu"})


def model_names() -> list[str]:
    from fus2net.models import list_models

    return list_models()


# ------------------------------------------------------------------------------ groups


@dataclass
class PathsSchema:
    root: str = MISSING
    data_dir: str = MISSING
    cache_dir: str = MISSING


@dataclass
class HeldOutSchema:
    fraction: float | None = rule(None, gt=0, lt=1)
    per_class: list[int] | None = field(default=None, metadata={"ge": 1, "nonempty": True})


@dataclass
class DataSchema:
    image_size: int = rule(ge=1)
    resize: Resize = Resize.stretch
    channels: int = rule(choices=(1, 3))
    batch_size: int = rule(ge=1)
    num_workers: int = rule(ge=0)
    cache: Cache = MISSING
    test: HeldOutSchema = field(default_factory=HeldOutSchema)
    dedupe: bool = MISSING
    duplicate_distance: int = rule(ge=0, le=64)  # bits of a 64-bit perceptual hash
    on_bad_image: OnBadImage = OnBadImage.error
    max_image_pixels: float = rule(DEFAULT_MAX_IMAGE_PIXELS, ge=1, whole=True)  # 1e8 too
    min_image_size: int = rule(DEFAULT_MIN_IMAGE_SIZE, ge=1)


@dataclass
class CvSchema:
    folds: int = rule(ge=2)
    fold: int | None = rule(None, ge=0)
    test_scoring: Scoring = MISSING
    checkpoint: Checkpoint = MISSING
    holdout_source: str | None = rule(None, nonempty=True)  # a pooled member (holdout.py checks)


@dataclass
class BalanceSchema:
    mode: BalanceMode = MISSING
    strategy: BalanceStrategy = BalanceStrategy.loss


@dataclass
class RegularizationSchema:
    dropout: float = rule(ge=0, lt=1)
    l2: float = rule(ge=0)
    label_smoothing: float = rule(0.0, ge=0, lt=1)  # of the cross-entropy (not in the paper)
    ema_decay: float | None = rule(None, gt=0, lt=1)  # EMA of the weights per step; null: off
    layer_decay: float | None = rule(None, gt=0, le=1)  # lr x this per layer down; null: off


@dataclass
class TrackingSchema:
    uri: str = rule(nonempty=True)
    artifact_location: str | None = None
    experiment: str = rule(nonempty=True)
    sweep: str | None = None
    log_checkpoints: bool = True
    stale_after_s: float | None = rule(None, gt=0)
    system_metrics: bool = False
    system_metrics_interval_s: float = rule(10.0, gt=0)


@dataclass
class GradcamSchema:
    enabled: bool = True
    n_images: int | None = rule(32, ge=1)
    layer: str = rule("auto", nonempty=True)
    target: CamTarget = CamTarget.predicted
    pointing_tolerance: int = rule(0, ge=0)


@dataclass
class EvaluationSchema:
    enabled: bool = True
    calibration_bins: int = rule(15, ge=1)
    calibration: Calibration = Calibration.platt
    target_sensitivity: float = rule(0.95, gt=0, le=1)
    bootstrap: int = rule(1000, ge=1)
    tta: Tta = Tta.none
    adabn: bool = False  # external sets scored after AdaBN (the other score is logged too)
    external_overlap: ExternalOverlap = ExternalOverlap.drop  # images shared with training
    gradcam: GradcamSchema = field(default_factory=GradcamSchema)
    register_model: bool = False
    model_name: str = rule(nonempty=True)


@dataclass
class TrainerSchema:
    """Our `trainer` keys; any other `pytorch_lightning.Trainer` argument is accepted too,
    typed by the Trainer's signature (precision's and deterministic's choices come from it)."""

    accelerator: str = rule(choices=_lightning_accelerators)
    devices: Any = MISSING  # a count, a list of ids or "auto": Lightning decides
    precision: Any = MISSING
    channels_last: bool = MISSING  # ours (not Trainer arguments): fus2net.training.fold
    compile: bool = False
    threads: int | None = rule(None, ge=1)
    max_epochs: int = rule(ge=1)
    log_every_n_steps: int = rule(ge=1)
    enable_progress_bar: bool = True
    deterministic: Any = None
    gradient_clip_val: float | None = rule(None, ge=0)
    limit_train_batches: float | None = rule(None, gt=0)  # a fraction, or a count of batches
    limit_val_batches: float | None = rule(None, ge=0)


# Trainer arguments fus2net.training.fold.build_trainer passes itself.
TRAINER_SET_BY_FUS2NET = {
    "logger": "fus2net's MLflow logger",
    "callbacks": "fus2net's checkpoint and throughput callbacks",
    "default_root_dir": "the fold's output folder",
    "enable_model_summary": "off",
}


@dataclass
class Fus2NetModelSchema:
    name: str = rule(choices=model_names)
    residual_scale: float = rule(0.17, gt=0)
    hidden_dim: int = rule(256, ge=1)
    pool: Pool = Pool.auto
    pretrained_path: str | None = None


class Pretrained(Enum):  # the torchvision baselines' model.pretrained
    imagenet = "imagenet"


@dataclass
class BaselineModelSchema:
    """A torchvision baseline: in_chans, num_classes and drop_rate come from other groups."""

    name: str = rule(choices=model_names)
    pretrained: Pretrained | None = None
    pretrained_path: str | None = None


def timm_names() -> list[str]:
    from fus2net.models.timm_models import timm_names

    return timm_names()


class ModelSource(Enum):
    timm = "timm"


class PretrainedSource(Enum):  # = fus2net.models.timm_models.PRETRAINED_SOURCES (tested)
    hub = "hub"
    package = "package"


@dataclass
class TimmModelSchema:
    """Any timm network (`model.source: timm`)."""

    name: str = rule(choices=timm_names, listed_by="timm.list_models()")
    source: ModelSource = ModelSource.timm
    pretrained: bool = False
    pretrained_source: PretrainedSource = PretrainedSource.hub
    pretrained_path: str | None = None


# The model options fus2net.training.module.BUSClassifier passes to create_model itself.
MODEL_ARGUMENTS_SET_BY_FUS2NET = ("in_chans", "num_classes", "drop_rate")


@dataclass
class SyntheticDatasetSchema:
    _target_: str = MISSING
    root: str = rule(nonempty=True)
    n_images: int = rule(500, ge=2)  # fus2net.data.synthetic.generate_dataset's limits
    image_size: int = rule(299, ge=64)
    malignant_fraction: float = rule(0.333, gt=0, lt=1)
    seed: int = rule(0, ge=0)
    name: str = rule("synthetic", nonempty=True)
    progress: bool = True


@dataclass
class BusiDatasetSchema:
    _target_: str = MISSING
    root: str = rule(nonempty=True)
    classes: list[str] = field(
        default_factory=lambda: ["benign", "malignant"], metadata={"nonempty": True}
    )
    name: str = rule("busi", nonempty=True)
    allow_outside_root: bool = False  # accept symlinks that resolve outside root


@dataclass
class FolderDatasetSchema:
    _target_: str = MISSING
    root: str = rule(nonempty=True)
    classes: list[str] | None = field(default=None, metadata={"nonempty": True})
    recursive: bool = True
    mask_suffix: str | None = rule("_mask", nonempty=True)
    group_regex: str | None = None
    name: str = rule("folder", nonempty=True)
    allow_outside_root: bool = False  # accept symlinks that resolve outside root


@dataclass
class ManifestDatasetSchema:
    _target_: str = MISSING
    csv: str = rule(nonempty=True)
    classes: list[str] = field(default=MISSING, metadata={"nonempty": True})
    label_column: str = rule(nonempty=True)
    image_column: str | None = None
    id_column: str | None = None
    path_template: str | None = None
    id_regex: str | None = None
    label_map: dict[Any, Any] | None = None  # raw label -> class name, or null to drop
    group_column: str | None = None
    mask_column: str | None = None
    mask_template: str | None = None
    mask_separator: str = rule(";", nonempty=True)
    root: str | None = None
    delimiter: str = rule(",", nonempty=True)  # one character: ManifestSource checks
    name: str = rule("manifest", nonempty=True)
    allow_outside_root: bool = False
    filters: dict[str, Any] | None = None  # column -> values kept (ManifestSource checks)
    sheet: Any = None  # a spreadsheet's sheet, by name or 0-based index; null = the first


@dataclass
class PooledDatasetSchema:
    _target_: str = MISSING
    members: Any = field(default_factory=dict)  # open: name -> a dataset config (each checked)
    name: str = rule("pooled", nonempty=True)


def dataset_schemas() -> dict[type, type]:
    """Our dataset sources and the dataclass that types their arguments (the source's
    signature stays the truth of which arguments exist: tested)."""
    from fus2net.data.sources import (
        BusiSource,
        FolderSource,
        ManifestSource,
        PooledSource,
        SyntheticSource,
    )

    return {
        SyntheticSource: SyntheticDatasetSchema,
        BusiSource: BusiDatasetSchema,
        FolderSource: FolderDatasetSchema,
        ManifestSource: ManifestDatasetSchema,
        PooledSource: PooledDatasetSchema,
    }


@dataclass
class TrainSchema:
    """The top level. The `Any` groups are dispatched by their `_target_` or `model.name`."""

    seed: int = rule(ge=0, le=2**31 - 1)  # fold k seeds seed + k, scoring seed + 1000
    paths: PathsSchema = field(default_factory=PathsSchema)
    data: DataSchema = field(default_factory=DataSchema)
    cv: CvSchema = field(default_factory=CvSchema)
    balance: BalanceSchema = field(default_factory=BalanceSchema)
    regularization: RegularizationSchema = field(default_factory=RegularizationSchema)
    tracking: TrackingSchema = field(default_factory=TrackingSchema)
    evaluation: EvaluationSchema = field(default_factory=EvaluationSchema)
    trainer: Any = MISSING
    model: Any = MISSING
    dataset: Any = MISSING
    eval_datasets: Any = field(default_factory=dict)  # open: name -> a dataset config
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    augmentation: Any = None


@dataclass(frozen=True)
class TargetGroup:
    """How a `_target_` group's signature becomes its schema."""

    passed: tuple[str, ...] = ()  # arguments the code passes itself, never settings
    rules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by argument name
    partial: bool | None = None  # what `_partial_` must be (the code calls the result)


TARGET_GROUPS: dict[str, TargetGroup] = {
    "dataset": TargetGroup(),
    "optimizer": TargetGroup(
        passed=("params",),
        rules={
            "lr": {"gt": 0},
            "eps": {"ge": 0},
            "weight_decay": {"ge": 0},
            "momentum": {"ge": 0},
            "alpha": {"ge": 0},
            "dampening": {"ge": 0},
        },
        partial=True,
    ),
    "scheduler": TargetGroup(
        passed=("optimizer",),
        rules={
            "step_size": {"ge": 1},
            "T_max": {"ge": 1},
            "gamma": {"gt": 0},
            "eta_min": {"ge": 0},
            "max_epochs": {"ge": 1},
            "warmup_epochs": {"ge": 0},
            "min_lr_ratio": {"ge": 0, "le": 1},
        },
        partial=True,
    ),
    "augmentation": TargetGroup(rules={"p": {"ge": 0, "le": 1}}),
}

# Hydra's own keys of a node `hydra.utils.instantiate` builds.
HYDRA_INSTANTIATE_KEYS: dict[str, tuple[Any, Any]] = {
    "_target_": (str | None, MISSING),
    "_partial_": (bool, False),
    "_convert_": (str, "none"),
    "_recursive_": (bool, True),
    "_args_": (list[Any] | None, None),
}
