"""The typed groups of `fus2net-train`'s config, as pydantic models: types, ranges, choices,
defaults and the keys of each group (`experiment.config_schema` checks a config against them).

A choice list lives once, in the module that acts on it (`inference.tta.TTA_MODES`, ...), and
is imported here; the choices only the config knows (`cv.checkpoint`) are defined here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from fus2net.data.balance import BalanceMode
from fus2net.data.cache import CacheMode
from fus2net.evaluation.calibration import CALIBRATION_METHODS
from fus2net.images.imageio import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MIN_IMAGE_SIZE, ImageLimits
from fus2net.images.resizing import RESIZE_MODES
from fus2net.inference.gradcam import CamTarget
from fus2net.inference.tta import TTA_MODES
from fus2net.models.fus2net import PoolMode
from fus2net.models.lesion_crop import LesionCropSettings
from fus2net.models.pretrained import IMAGENET
from fus2net.models.timm_models import PRETRAINED_SOURCES

# ------------------------------------------------------------------------------ value types


def _refuse(*kinds: type) -> BeforeValidator:
    """What OmegaConf's typed nodes refused: `true` for a number, 2.0 for a whole number."""

    def check(value: Any) -> Any:
        if isinstance(value, kinds):
            raise PydanticCustomError("wrong_type", "wrong type")
        return value

    return BeforeValidator(check)


def _text(value: Any) -> Any:
    """A number or true/false where a string goes is that string (as OmegaConf stored it)."""
    return str(value) if isinstance(value, bool | int | float) else value


Int = Annotated[int, _refuse(bool, float)]
Whole = Annotated[int, _refuse(bool)]  # a number that must be whole: 1e8 too
Float = Annotated[float, _refuse(bool)]
Str = Annotated[str, BeforeValidator(_text)]
Text = Annotated[Str, Field(min_length=1)]
Texts = Annotated[list[Str], Field(min_length=1)]

OnBadImage = Literal["error", "skip"]
TestScoring = Literal["ensemble", "refit"]
Checkpoint = Literal["last", "best"]
BalanceStrategy = Literal["loss", "sampler"]
ExternalOverlap = Literal["drop", "keep"]  # an external set's images the training pool holds too


class Node(BaseModel):
    """A group of settings: typed, frozen, and no key but its own."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class OpenNode(Node):
    """Settings of a target that takes `**kwargs`: other keys are passed on, it checks them."""

    model_config = ConfigDict(extra="allow")


def group() -> Any:
    """A group's field: a group left out is checked as an empty one (each required key named)."""
    return Field(default_factory=dict, validate_default=True)


# ------------------------------------------------------------------------------ groups


class Paths(Node):
    root: Str
    data_dir: Str
    cache_dir: Str


class HeldOut(Node):
    fraction: Float | None = Field(None, gt=0, lt=1)
    per_class: list[Annotated[Int, Field(ge=1)]] | None = Field(None, min_length=1)


class Data(Node):
    image_size: Int = Field(ge=1)
    resize: Literal[RESIZE_MODES] = "stretch"
    channels: Annotated[Literal[1, 3], _refuse(bool, float)]
    batch_size: Int = Field(ge=1)
    num_workers: Int = Field(ge=0)
    cache: CacheMode
    test: HeldOut = group()
    dedupe: bool
    duplicate_distance: Int = Field(ge=0, le=64)  # bits of a 64-bit perceptual hash
    on_bad_image: OnBadImage = "error"
    max_image_pixels: Whole = Field(DEFAULT_MAX_IMAGE_PIXELS, ge=1)
    min_image_size: Int = Field(DEFAULT_MIN_IMAGE_SIZE, ge=1)

    @property
    def limits(self) -> ImageLimits:
        """What the decoder refuses before decoding a pixel (`images/imageio.py`)."""
        return ImageLimits(max_pixels=self.max_image_pixels, min_size=self.min_image_size)

    @model_validator(mode="after")
    def _decodable(self) -> Data:
        _ = self.limits  # at most PIL's own decompression-bomb limit: a ValueError says so
        return self


class Cv(Node):
    folds: Int = Field(ge=2)
    fold: Int | None = Field(None, ge=0)
    test_scoring: TestScoring
    checkpoint: Checkpoint
    holdout_source: Text | None = None  # a pooled member (holdout.py checks)


class Balance(Node):
    mode: BalanceMode
    strategy: BalanceStrategy = "loss"


class Regularization(Node):
    dropout: Float = Field(ge=0, lt=1)
    l2: Float = Field(ge=0)
    label_smoothing: Float = Field(0.0, ge=0, lt=1)  # of the cross-entropy (not in the paper)
    ema_decay: Float | None = Field(None, gt=0, lt=1)  # EMA of the weights per step; null: off
    layer_decay: Float | None = Field(None, gt=0, le=1)  # lr x this per layer down; null: off


class Tracking(Node):
    uri: Text
    artifact_location: Str | None = None
    experiment: Text
    sweep: Str | None = None
    log_checkpoints: bool = True
    stale_after_s: Float | None = Field(None, gt=0)
    system_metrics: bool = False
    system_metrics_interval_s: Float = Field(10.0, gt=0)


class Gradcam(Node):
    enabled: bool = True
    n_images: Int | None = Field(32, ge=1)
    layer: Text = "auto"
    target: CamTarget = "predicted"
    pointing_tolerance: Int = Field(0, ge=0)


class Evaluation(Node):
    enabled: bool = True
    calibration_bins: Int = Field(15, ge=1)
    calibration: Literal[CALIBRATION_METHODS] = "platt"
    target_sensitivity: Float = Field(0.95, gt=0, le=1)
    bootstrap: Int = Field(1000, ge=1)
    tta: Literal[TTA_MODES] = "none"
    adabn: bool = False  # external sets scored after AdaBN (the other score is logged too)
    external_overlap: ExternalOverlap = "drop"  # images shared with training
    gradcam: Gradcam = group()
    register_model: bool = False
    model_name: Text


class Trainer(Node):
    """Our `trainer` keys; any other `pytorch_lightning.Trainer` argument is accepted too,
    typed by the Trainer's signature (`devices`, `precision` and `deterministic` by it)."""

    accelerator: Str  # one of Lightning's accelerators (trainer_type)
    devices: Any  # a count, a list of ids or "auto": Lightning decides
    precision: Any
    channels_last: bool  # ours, not Trainer arguments: config.factories.TRAINER_EXTRAS
    compile: bool = False
    threads: Int | None = Field(None, ge=1)
    max_epochs: Int = Field(ge=1)
    log_every_n_steps: Int = Field(ge=1)
    enable_progress_bar: bool = True
    deterministic: Any = None
    gradient_clip_val: Float | None = Field(None, ge=0)
    limit_train_batches: Float | None = Field(None, gt=0)  # a fraction, or a count of batches
    limit_val_batches: Float | None = Field(None, ge=0)


# Trainer arguments fus2net.training.fold.build_trainer passes itself.
TRAINER_SET_BY_FUS2NET = {
    "logger": "fus2net's MLflow logger",
    "callbacks": "fus2net's checkpoint and throughput callbacks",
    "default_root_dir": "the fold's output folder",
    "enable_model_summary": "off",
}


# Lesion-centred crops: absent unless the lesion_crop group (conf/lesion_crop/) sets them.
LESION_CROP: Any = Field(
    None, description="set by the `lesion_crop` group: `lesion_crop=segmenter` (docs/training.md)"
)


class Fus2NetModel(Node):
    name: Str
    residual_scale: Float = Field(0.17, gt=0)
    hidden_dim: Int = Field(256, ge=1)
    pool: PoolMode = "auto"
    pretrained_path: Str | None = None
    lesion_crop: LesionCropSettings | None = LESION_CROP


class BaselineModel(Node):
    """A torchvision baseline: in_chans, num_classes and drop_rate come from other groups."""

    name: Str
    pretrained: Literal[IMAGENET] | None = None
    pretrained_path: Str | None = None
    lesion_crop: LesionCropSettings | None = LESION_CROP


class TimmModel(Node):
    """Any timm network (`model.source: timm`)."""

    name: Str  # one of timm.list_models() (model_types)
    source: Literal["timm"] = "timm"
    pretrained: bool = False
    pretrained_source: Literal[PRETRAINED_SOURCES] = "hub"
    pretrained_path: Str | None = None
    lesion_crop: LesionCropSettings | None = LESION_CROP


# The model options fus2net.config.factories.network passes to create_model itself.
MODEL_ARGUMENTS_SET_BY_FUS2NET = ("in_chans", "num_classes", "drop_rate")


class DatasetNode(Node):
    """A dataset source's settings (its signature's other arguments are none: tested)."""

    target_: Str = Field(alias="_target_")


class SyntheticDataset(DatasetNode):
    root: Text
    n_images: Int = Field(500, ge=2)  # fus2net.synthetic.generator.generate_dataset's limits
    image_size: Int = Field(299, ge=64)
    malignant_fraction: Float = Field(0.333, gt=0, lt=1)
    seed: Int = Field(0, ge=0)
    name: Text = "synthetic"
    progress: bool = True


class BusiDataset(DatasetNode):
    root: Text
    classes: Texts = ["benign", "malignant"]
    name: Text = "busi"
    allow_outside_root: bool = False  # accept symlinks that resolve outside root


class FolderDataset(DatasetNode):
    root: Text
    classes: Texts | None = None
    recursive: bool = True
    mask_suffix: Text | None = "_mask"
    group_regex: Str | None = None
    name: Text = "folder"
    allow_outside_root: bool = False  # accept symlinks that resolve outside root


class ManifestDataset(DatasetNode):
    csv: Text
    classes: Texts
    label_column: Text
    image_column: Str | None = None
    id_column: Str | None = None
    path_template: Str | None = None
    id_regex: Str | None = None
    label_map: dict[Any, Any] | None = None  # raw label -> class name, or null to drop
    group_column: Str | None = None
    mask_column: Str | None = None
    mask_template: Str | None = None
    mask_separator: Text = ";"
    root: Str | None = None
    delimiter: Text = ","  # one character: ManifestSource checks
    name: Text = "manifest"
    allow_outside_root: bool = False
    filters: dict[str, Any] | None = None  # column -> values kept (ManifestSource checks)
    sheet: Any = None  # a spreadsheet's sheet, by name or 0-based index; null = the first


class PooledDataset(DatasetNode):
    members: Any = {}  # open: name -> a dataset config (each checked)
    name: Text = "pooled"


def dataset_schemas() -> dict[type, type[Node]]:
    """Our dataset sources and the model that types their arguments (the source's signature
    stays the truth of which arguments exist: tested)."""
    from fus2net.data.sources import (
        BusiSource,
        FolderSource,
        ManifestSource,
        PooledSource,
        SyntheticSource,
    )

    return {
        SyntheticSource: SyntheticDataset,
        BusiSource: BusiDataset,
        FolderSource: FolderDataset,
        ManifestSource: ManifestDataset,
        PooledSource: PooledDataset,
    }


class TrainConfig(Node):
    """The whole train config, typed. The `Any` groups are typed per config, by their
    `_target_` or `model.name` (`config_schema.train_schema`)."""

    seed: Int = Field(ge=0, le=2**31 - 1)  # fold k seeds seed + k, scoring seed + 1000
    paths: Paths = group()
    data: Data = group()
    cv: Cv = group()
    balance: Balance = group()
    regularization: Regularization = group()
    tracking: Tracking = group()
    evaluation: Evaluation = group()
    trainer: Any
    model: Any
    dataset: Any
    eval_datasets: Any = {}  # open: name -> a dataset config
    optimizer: Any
    scheduler: Any
    augmentation: Any = None


# The groups a config chooses an option of (`model=resnet18`), typed by what it chose.
CHOSEN_GROUPS = ("trainer", "model", "dataset", "optimizer", "scheduler")

# ------------------------------------------------------------------------------ chosen types


@dataclass(frozen=True)
class TargetGroup:
    """How a `_target_` group's signature becomes its schema."""

    passed: tuple[str, ...] = ()  # arguments the code passes itself, never settings
    rules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # Field bounds by name
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

# Hydra's own keys of a node `hydra.utils.instantiate` builds: (type, default; ... = required).
HYDRA_INSTANTIATE_KEYS: dict[str, tuple[Any, Any]] = {
    "_target_": (Str | None, ...),
    "_partial_": (bool, False),
    "_convert_": (Str, "none"),
    "_recursive_": (bool, True),
    "_args_": (list[Any] | None, None),
}


class NoScheduler(Node):
    """`scheduler=none`: no target, so no argument."""

    target_: Str | None = Field(None, alias="_target_")
