"""The typed schema of `fus2net-train`'s config, checked once before any data is read.

Why: Hydra composes whatever it is given. Without a schema `cv.folds=abc` is a traceback,
`cv.folds=2.5` is truncated, `optimizer.lr=-1` fails after the data is prepared, and
`+data.imgsize=64` (Hydra's own hint after a typo) runs silently as a new cell. Here every
group has a typed OmegaConf dataclass (types, `MISSING`, `Optional`, `Enum` choices) with its
ranges as field metadata; each key of the composed config is merged into it on its own, so
that one `ConfigError` lists every wrong key, its value and what it accepts.

Which keys exist:

- the fixed groups (`data`, `cv`, `paths`, `balance`, `regularization`, `tracking`,
  `evaluation`, `seed`) and `model` (by `model.name`) are closed: their dataclass lists them;
- a `_target_` node (`dataset`, every `eval_datasets` entry, `optimizer`, `scheduler`,
  `augmentation` and each of its transforms) takes the keyword arguments of its target's
  signature, typed by the signature where it says (and by our dataclass where we know more);
  arguments the code passes itself (the optimizer's `params`) are not settings;
- `trainer` takes our dataclass's keys plus any `pytorch_lightning.Trainer` argument, except
  those fus2net sets itself;
- `eval_datasets` is open: any name, each entry a dataset config as above.

Cross-field checks (a test fraction or counts, `cv.fold` < `cv.folds`, the model's minimum
input size, a GPU, the launcher) stay in `preflight.check_config`, which runs after this.
Hydra's own `hydra` node is Hydra's business and not looked at.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import types
import typing
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fus2net.data.imageio import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MIN_IMAGE_SIZE
from fus2net.experiment.preflight import ConfigError

# ------------------------------------------------------------------------------ choices


class Cache(Enum):
    memory = "memory"
    disk = "disk"
    none = "none"


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
    number field that takes integers only, 1e8 included)."""
    return field(default=default, metadata=rules)


def _lightning_accelerators() -> list[str]:
    from pytorch_lightning.accelerators import AcceleratorRegistry

    return sorted({*AcceleratorRegistry.available_accelerators(), "auto", "gpu"})


def _model_names() -> list[str]:
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


@dataclass
class BalanceSchema:
    mode: BalanceMode = MISSING
    strategy: BalanceStrategy = BalanceStrategy.loss


@dataclass
class RegularizationSchema:
    dropout: float = rule(ge=0, lt=1)
    l2: float = rule(ge=0)


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
    name: str = rule(choices=_model_names)
    residual_scale: float = rule(0.17, gt=0)
    hidden_dim: int = rule(256, ge=1)
    pool: Pool = Pool.auto
    pretrained_path: str | None = None


@dataclass
class BaselineModelSchema:
    """A torchvision baseline: in_chans, num_classes and drop_rate come from other groups."""

    name: str = rule(choices=_model_names)
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


@dataclass
class FolderDatasetSchema:
    _target_: str = MISSING
    root: str = rule(nonempty=True)
    classes: list[str] | None = field(default=None, metadata={"nonempty": True})
    recursive: bool = True
    mask_suffix: str | None = rule("_mask", nonempty=True)
    group_regex: str | None = None
    name: str = rule("folder", nonempty=True)


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


def dataset_schemas() -> dict[type, type]:
    """Our dataset sources and the dataclass that types their arguments (the source's
    signature stays the truth of which arguments exist: tested)."""
    from fus2net.data.sources import BusiSource, FolderSource, ManifestSource, SyntheticSource

    return {
        SyntheticSource: SyntheticDatasetSchema,
        BusiSource: BusiDatasetSchema,
        FolderSource: FolderDatasetSchema,
        ManifestSource: ManifestDatasetSchema,
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

# ------------------------------------------------------------------- signatures as schemas

_PRIMITIVES = (bool, int, float, str)
_CONTAINERS = (list, tuple, dict, set, frozenset, Sequence, Mapping, Collection, Iterable)
_NONE = type(None)


def _parse_annotation(text: str) -> Any:
    """A string annotation that could not be evaluated: `int`, `float | None`, ...; a part with
    brackets (a container, a Literal) makes it Any, an unknown class name is dropped."""
    names = {"int": int, "float": float, "bool": bool, "str": str, "None": _NONE}
    parts = [part.strip() for part in text.split("|")]
    if any("[" in part for part in parts):
        return Any
    known = [names[part] for part in parts if part in names]
    if not known:
        return Any
    return typing.Union[tuple(known)] if len(known) > 1 else known[0]  # noqa: UP007


def infer_type(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """(OmegaConf field type, rules) of a signature annotation: a primitive (`float | Tensor`
    is a float: a config cannot hold a tensor), Optional of one, choices of a Literal, else
    Any (containers, unions of several primitives, classes), which the target checks itself."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return Any, {}
    if isinstance(annotation, str):
        annotation = _parse_annotation(annotation)
    origin = typing.get_origin(annotation)
    members = (
        typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)
    )
    optional = _NONE in members
    members = tuple(m for m in members if m is not _NONE)
    literals = [v for m in members if typing.get_origin(m) is Literal for v in typing.get_args(m)]
    rest = [m for m in members if typing.get_origin(m) is not Literal]
    if literals:
        if all(m is bool for m in rest):
            choices = [*literals, *([True, False] if rest else []), *([None] if optional else [])]
            return Any, {"choices": tuple(choices)}
        return Any, {}
    found = set()
    for member in rest:
        base = typing.get_origin(member) or member
        if member is Any or base in _CONTAINERS:
            return Any, {}
        if base in _PRIMITIVES:
            found.add(base)
    if found == {int, float}:
        found = {float}
    if len(found) != 1:
        return Any, {}
    (kind,) = found
    return (kind | None if optional else kind), {}


def _union_members(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a signature default can stand as the schema field's default."""
    if hint is Any:
        return True
    members = _union_members(hint)
    if value is None:
        return _NONE in members
    if isinstance(value, bool):
        return bool in members
    return any(
        isinstance(value, m) or (m is float and isinstance(value, int))
        for m in members
        if isinstance(m, type) and m is not _NONE
    )


def _field_from(spec: dataclasses.Field, hint: Any, extra_rules: Mapping[str, Any]) -> tuple:
    """A dataclass field of `base` again, its rules completed by the signature's."""
    rules = {**extra_rules, **spec.metadata}
    if spec.default is not dataclasses.MISSING:
        return spec.name, hint, field(default=spec.default, metadata=rules)
    if spec.default_factory is not dataclasses.MISSING:
        return spec.name, hint, field(default_factory=spec.default_factory, metadata=rules)
    return spec.name, hint, field(default=MISSING, metadata=rules)


def signature_schema(
    target: Callable[..., Any],
    base: type | None = None,
    group: TargetGroup | None = None,
    instantiate_keys: bool = True,
) -> tuple[type, bool]:
    """A dataclass of `target`'s keyword arguments (and Hydra's `_target_` keys), with the
    fields of `base` in front where it types them better; True when the target also takes
    `**kwargs`, so that any other key is passed on."""
    group = group or TargetGroup()
    try:
        signature = inspect.signature(target, eval_str=True)
    except ValueError:  # no signature to read (a builtin): every key is passed on
        signature = inspect.Signature([inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])
    except Exception:  # an annotation that does not evaluate: read them as text
        signature = inspect.signature(target)
    params = {
        name: p
        for name, p in signature.parameters.items()
        if name not in group.passed and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    inferred = {name: infer_type(p.annotation) for name, p in params.items()}
    fields: list[tuple] = []
    if base is not None:
        hints = typing.get_type_hints(base)
        for spec in dataclasses.fields(base):
            hint = hints[spec.name]
            extra = dict(group.rules.get(spec.name, {}))
            if hint is Any:  # e.g. trainer.precision: the Literal choices of the signature
                extra = {**inferred.get(spec.name, (Any, {}))[1], **extra}
            fields.append(_field_from(spec, hint, extra))
    have = {f[0] for f in fields}
    for name, p in params.items():
        if name in have:
            continue
        hint, rules = inferred[name]
        rules = {**rules, **group.rules.get(name, {})}
        default = p.default
        if default is p.empty:
            default = MISSING
        elif not _fits(default, hint) or not isinstance(default, (*_PRIMITIVES, tuple, _NONE)):
            hint = Any  # e.g. a Path or an Accelerator instance as default: the target checks
            default = default if isinstance(default, tuple) else None
        fields.append((name, hint, field(default=default, metadata=rules)))
    if instantiate_keys:
        for name, (hint, default) in HYDRA_INSTANTIATE_KEYS.items():
            if name not in have:
                rules = {}
                if name == "_partial_" and group.partial is not None:
                    rules = {"choices": (group.partial,)}
                fields.append((name, hint, field(default=default, metadata=rules)))
    title = getattr(target, "__name__", "Target")
    return dataclasses.make_dataclass(f"{title}Settings", fields), takes_kwargs


# ------------------------------------------------------------------------------ messages


def show(value: Any) -> str:
    """A value as it would be written in a command-line override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.name)
    if isinstance(value, str):
        return value if re.fullmatch(r"[\w.:/@+\-${}]+", value) else repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


_NOUNS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
_PLURALS = {bool: "true/false values", int: "whole numbers", float: "numbers", str: "strings"}


def _kind(hint: Any) -> str:
    if hint is Any:
        return "any value"
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(m.name for m in hint)
    if dataclasses.is_dataclass(hint):
        return f"a group of settings ({', '.join(f.name for f in dataclasses.fields(hint))})"
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        item = (typing.get_args(hint) or (Any,))[0]
        return f"a list of {_PLURALS[item]}" if item in _PLURALS else "a list"
    if origin is dict:
        return "a mapping"
    return _NOUNS.get(hint, getattr(hint, "__name__", str(hint)))


def _bounds(rules: Mapping[str, Any]) -> str:
    parts = [
        f"{op} {show(rules[name])}"
        for name, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if name in rules
    ]
    return " and ".join(parts)


def _choices(rules: Mapping[str, Any]) -> list[Any] | None:
    choices = rules.get("choices")
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)


def accepts(hint: Any, rules: Mapping[str, Any]) -> str:
    """What a field takes, in words: type, bounds, choices, and null where it may be."""
    members = _union_members(hint)
    optional = _NONE in members
    if optional:
        hint = next(m for m in members if m is not _NONE)
    choices = _choices(rules)
    if choices is not None:
        return "one of " + ", ".join(dict.fromkeys(show(c) for c in choices))
    text = "a whole number" if rules.get("whole") else _kind(hint)
    if rules.get("nonempty"):
        text = text.replace("a ", "a non-empty ", 1)
    bounds = _bounds(rules)
    if bounds:
        text += (" with every value " if text.startswith("a ") and "list" in text else " ") + bounds
    return text + (", or null" if optional else "")


def _near_choice(value: Any, hint: Any, rules: Mapping[str, Any]) -> str:
    """ "; did you mean X?" for a misspelt choice (`data.cache=memroy`), else ""."""
    members = [m for m in _union_members(hint) if m is not _NONE]
    choices = _choices(rules)
    if choices is None and members and isinstance(members[0], type):
        choices = [m.name for m in members[0]] if issubclass(members[0], Enum) else None
    names = [c for c in choices or [] if isinstance(c, str)]
    close = difflib.get_close_matches(str(value), names, n=1) if isinstance(value, str) else []
    return f"; did you mean {close[0]}?" if close else ""


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _broken(value: Any, rules: Mapping[str, Any]) -> bool:
    """Whether a value of the right type still breaks its field's rules."""
    choices = _choices(rules)
    if choices is not None:
        return not any(_same(value, c) for c in choices)
    if value is None:
        return False
    if rules.get("nonempty") and isinstance(value, str | list | tuple | dict) and not value:
        return True
    if rules.get("whole") and isinstance(value, float) and not value.is_integer():
        return True
    for item in value if isinstance(value, list | tuple) else [value]:
        if isinstance(item, bool) or not isinstance(item, int | float):
            continue
        below = ("ge" in rules and item < rules["ge"]) or ("gt" in rules and item <= rules["gt"])
        above = ("le" in rules and item > rules["le"]) or ("lt" in rules and item >= rules["lt"])
        if below or above:
            return True
    return False


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf under a plain value, for naming unknown keys."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from _leaves(item, _join(path, key))
    else:
        yield path, value


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _reason(err: BaseException, limit: int = 400) -> str:
    """An error's message on one line (pydantic's links to its docs left out)."""
    lines = [line.strip() for line in str(err).splitlines()]
    noise = ("For further", "full_key:", "object_type=", "reference_type=")  # pydantic, OmegaConf
    text = " ".join(line for line in lines if line and not line.startswith(noise))
    text = text or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def locate(path: str) -> Any:
    """The object a `_target_` names, found as Hydra finds it (the longest importable module,
    then attributes); ImportError says what is missing."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(found, name):
                raise ImportError(f"{module} has no {'.'.join(parts[i:])}")
            found = getattr(found, name)
        return found
    raise ImportError(f"no module named {parts[0]!r}")


# ------------------------------------------------------------------------------ the check


@dataclass
class _Unknown:
    key: str
    shown: str
    siblings: list[str]


class _Check:
    """One walk of the composed config against the schema, collecting every problem."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.unknown: list[_Unknown] = []
        self.known: list[str] = []  # every dotted key the schema has, for "did you mean"
        self.failed_groups: set[str] = set()

    def problem(self, path: str, text: str) -> None:
        self.problems.append(text)
        self.failed_groups.add(path.split(".")[0])

    def node(
        self,
        schema_type: type,
        user: DictConfig,
        path: str,
        group: str = "",
        takes_kwargs: bool = False,
        set_by_code: Mapping[str, str] | None = None,
        handlers: Mapping[str, Callable[[Any], Any]] | None = None,
    ) -> None:
        """Merge each key of `user` into a fresh `schema_type` node on its own, so that one
        bad key does not hide the next; `handlers` check the keys typed by their content."""
        schema = OmegaConf.structured(schema_type)
        if takes_kwargs:
            OmegaConf.set_struct(schema, False)
        hints = typing.get_type_hints(schema_type)
        rules = {f.name: f.metadata for f in dataclasses.fields(schema_type)}
        names = [str(k) for k in schema]
        handlers = handlers or {}
        self.known += [_join(path, k) for k in names]
        for key in user:
            full = _join(path, key)
            if not path and key == "hydra":
                continue  # Hydra's own node
            if set_by_code and key in set_by_code:
                why = set_by_code[key]
                self.problem(full, f"{full}: set by fus2net itself ({why}), not a setting")
                continue
            if key not in names and not takes_kwargs:
                self._unknown(user, key, full, [_join(path, k) for k in names])
                continue
            hint, rule_set = hints.get(str(key), Any), rules.get(str(key), {})
            if OmegaConf.is_missing(user, key):
                self.problem(full, f"{full}=???: needs a value: {accepts(hint, rule_set)}")
                continue
            try:
                value = user[key]
            except OmegaConfBaseException as err:
                self.problem(full, f"{full}: cannot be resolved: {_reason(err)}")
                continue
            if key in handlers:
                handlers[key](value)
                continue
            if key not in names:  # passed on to a target's **kwargs, which checks it
                continue
            if isinstance(value, DictConfig) and dataclasses.is_dataclass(hint):
                self.node(hint, value, full, group)
                continue
            try:
                plain = _plain(value)
            except OmegaConfBaseException as err:
                self.problem(full, f"{full}: cannot be resolved: {_reason(err)}")
                continue
            if hint is Any:
                self._targets_inside(value, full, group)
            try:
                schema[key] = plain
                checked = plain if hint is Any else _plain(schema[key])
                broken = _broken(checked, rule_set)
            except OmegaConfBaseException:
                broken = True
            if broken:
                near = _near_choice(plain, hint, rule_set)
                self.problem(full, f"{full}={show(plain)}: must be {accepts(hint, rule_set)}{near}")
        given = {str(k) for k in user}  # `in` is False for a ??? value
        for key in names:
            if key in given:
                continue
            full = _join(path, key)
            if dataclasses.is_dataclass(hints[key]):
                self.node(hints[key], OmegaConf.create({}), full, group)
            elif key in handlers and OmegaConf.is_missing(schema, key):
                self.problem(full, f"{full}: missing; choose one ({full}=...)")
            elif OmegaConf.is_missing(schema, key):
                self.problem(full, f"{full}: missing; set it to {accepts(hints[key], rules[key])}")

    def _unknown(self, user: DictConfig, key: Any, full: str, siblings: list[str]) -> None:
        try:
            leaves = list(_leaves(_plain(user[key]), full))
        except OmegaConfBaseException:
            leaves = [(full, "...")]
        shown = ", ".join(f"{k}={show(v)}" for k, v in leaves[:3])
        shown += f" (and {len(leaves) - 3} more)" if len(leaves) > 3 else ""
        self.unknown.append(_Unknown(full, shown, siblings))
        self.failed_groups.add(full.split(".")[0])

    def _targets_inside(self, value: Any, path: str, group: str) -> None:
        """Nodes with their own `_target_` inside an Any field (albumentations.Compose's
        transforms): Hydra builds them too, so each is checked against its own target."""
        if not group:
            return
        if isinstance(value, DictConfig) and "_target_" in value:
            self.target(value, path, group)
        elif isinstance(value, ListConfig):
            for i, item in enumerate(value):
                if isinstance(item, DictConfig) and "_target_" in item:
                    self.target(item, _join(path, i), group)

    def target(self, user: Any, path: str, group: str) -> None:
        """A node Hydra instantiates: its keys are its target's arguments."""
        if user is None and group == "augmentation":
            return  # augmentation=none
        if not isinstance(user, DictConfig):
            self.problem(path, f"{path}={show(_plain(user))}: must be settings with a _target_")
            return
        target = user.get("_target_")
        if target is None:
            if group != "scheduler":
                self.problem(path, f"{path}._target_: missing; set it to a class to build")
                return
            fields = [("_target_", str | None, field(default=None))]
            self.node(dataclasses.make_dataclass("NoScheduler", fields), user, path, group)
            return
        try:
            located = locate(str(target))
            base = dataset_schemas().get(located) if group == "dataset" else None
            schema_type, takes_kwargs = signature_schema(located, base, TARGET_GROUPS[group])
        except Exception as err:  # not importable, or no signature to read
            self.problem(
                path,
                f"{path}._target_={show(target)}: cannot be used ({_reason(err)}); it must "
                f"name an importable class, e.g. {_EXAMPLE_TARGETS[group]}",
            )
            return
        self.node(schema_type, user, path, group, takes_kwargs)

    def model(self, user: Any) -> None:
        from fus2net.models import Fus2Net

        if not isinstance(user, DictConfig):
            self.problem("model", f"model={show(_plain(user))}: must be settings with a name")
            return
        name = user.get("name")
        if name not in _model_names():
            near = _near_choice(name, str, {"choices": _model_names})
            choices = ", ".join(_model_names())
            self.problem("model", f"model.name={show(name)}: must be one of {choices}{near}")
            return
        group = TargetGroup(passed=MODEL_ARGUMENTS_SET_BY_FUS2NET)
        if name == "fus2net":
            schema_type, _ = signature_schema(Fus2Net, Fus2NetModelSchema, group, False)
        else:
            schema_type = BaselineModelSchema
        self.node(schema_type, user, "model")

    def trainer(self, user: Any) -> None:
        import pytorch_lightning as L

        if not isinstance(user, DictConfig):
            self.problem("trainer", f"trainer={show(_plain(user))}: must be Trainer settings")
            return
        group = TargetGroup(passed=tuple(TRAINER_SET_BY_FUS2NET))
        schema_type, _ = signature_schema(L.Trainer, TrainerSchema, group, False)
        self.node(schema_type, user, "trainer", set_by_code=TRAINER_SET_BY_FUS2NET)

    def eval_datasets(self, user: Any) -> None:
        if user is None:
            return
        if not isinstance(user, DictConfig):
            self.problem(
                "eval_datasets",
                f"eval_datasets={show(_plain(user))}: must be a mapping of name -> dataset "
                "(add one with '+dataset@eval_datasets.NAME=busbra')",
            )
            return
        for name in user:
            path = f"eval_datasets.{name}"
            try:
                entry = user[name]
            except OmegaConfBaseException as err:
                self.problem(path, f"{path}: cannot be resolved: {_reason(err)}")
                continue
            self.target(entry, path, "dataset")

    def suggestions(self) -> None:
        """Word each unknown key, with the closest known key when one is close: the same
        name in another group first (`data.max_epochs`: trainer.max_epochs), else a near
        one in its own group, else a near one anywhere."""

        def leaf(key: str) -> str:
            return key.rsplit(".", 1)[-1]

        for item in self.unknown:
            name = leaf(item.key)
            known = [k for k in self.known if k != item.key and not leaf(k).startswith("_")]
            siblings = [k for k in item.siblings if not leaf(k).startswith("_")]
            close = [k for k in known if leaf(k) == name][:1]
            for pool, cutoff in ((siblings, 0.7), (known, 0.8)):
                if not close:
                    near = difflib.get_close_matches(name, [leaf(k) for k in pool], 1, cutoff)
                    close = [k for k in pool if near and leaf(k) == near[0]][:1]
            hint = f"; did you mean {close[0]}?" if close else ""
            where = item.key.rsplit(".", 1)[0] if "." in item.key else "the config"
            keys = [leaf(k) for k in siblings]
            listed = ", ".join(keys[:20]) + (f", ... ({len(keys)} keys)" if len(keys) > 20 else "")
            self.problems.append(
                f"{item.shown}: unknown key {item.key}{hint} ({where} takes: {listed or 'none'})"
            )


_EXAMPLE_TARGETS = {
    "dataset": "fus2net.data.sources.FolderSource (or choose dataset=busi, folder, manifest)",
    "optimizer": "torch.optim.Adam (or choose optimizer=adam, rmsprop, sgd)",
    "scheduler": "torch.optim.lr_scheduler.StepLR (or choose scheduler=none, cosine, step)",
    "augmentation": "albumentations.HorizontalFlip (or choose augmentation=paper, none)",
}


def _constructed(cfg: DictConfig, check: _Check) -> None:
    """The optimizer, scheduler and augmentation built once on a dummy parameter, so that
    their own checks (Adam's betas, albumentations' ranges) run before any data is read."""
    import torch
    from hydra.utils import instantiate

    def attempt(group: str, build: Callable[[], Any]) -> None:
        if group in check.failed_groups or cfg.get(group) is None:
            return
        if not cfg[group].get("_target_"):
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                build()
        except Exception as err:
            outer = str(err)  # Hydra's: which target of a nested node, and its key
            target = re.search(r"call to target '([^']+)'", outer)
            where = re.search(r"full_key: (\S+)", outer)
            named = target.group(1) if target else cfg[group].get("_target_")
            if where:  # Hydra writes list items as `transforms0`
                key = re.sub(r"transforms(\d)", r"transforms.\1", where.group(1))
                named += f" ({key})"
            reason = _reason(err.__cause__ or err)
            check.problem(group, f"{group}: {named} refuses these settings: {reason}")

    weight = torch.nn.Parameter(torch.zeros(1))
    attempt("optimizer", lambda: instantiate(cfg.optimizer)([weight]))
    attempt("scheduler", lambda: instantiate(cfg.scheduler)(torch.optim.SGD([weight], lr=0.1)))
    attempt("augmentation", lambda: instantiate(cfg.augmentation))


def config_problems(cfg: DictConfig) -> list[str]:
    """Every way the composed config breaks the schema, one line each (empty: it keeps it)."""
    check = _Check()
    handlers: dict[str, Callable[[Any], Any]] = {
        "dataset": lambda node: check.target(node, "dataset", "dataset"),
        "optimizer": lambda node: check.target(node, "optimizer", "optimizer"),
        "scheduler": lambda node: check.target(node, "scheduler", "scheduler"),
        "augmentation": lambda node: check.target(node, "augmentation", "augmentation"),
        "model": check.model,
        "trainer": check.trainer,
        "eval_datasets": check.eval_datasets,
    }
    check.node(TrainSchema, cfg, "", handlers=handlers)
    check.suggestions()
    _constructed(cfg, check)
    return check.problems


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every key of `cfg` the schema refuses: its value and what it
    accepts (all at once, before any data is read)."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
