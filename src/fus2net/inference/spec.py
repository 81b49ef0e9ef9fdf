"""`fus2net_model.json`: everything besides the weights that prediction needs.

Written by training next to the fold weights (the job's output folder), logged to the cell run
(`model/fus2net_model.json`) and packed into a registered model: architecture, preprocessing,
class names, the ensemble members, the probability calibration (temperature and bias) and the
operating points chosen on validation predictions. Weight paths are relative to the file's
folder, so a folder can move.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from fus2net.evaluation.calibration import calibrated_ensemble
from fus2net.inference.spec_checks import spec_problems
from fus2net.io.files import write_text
from fus2net.models.weights import load_weights

SPEC_FILE = "fus2net_model.json"
FORMAT = "fus2net-model/1"
DEFAULT_POINT = "default"  # threshold 0.5, the paper's decision rule


@dataclass(frozen=True)
class Member:
    """One model of the ensemble: its weights file and the fold it was trained on (None: the
    refit on all training images)."""

    weights: str
    fold: int | None = None


@dataclass
class ModelSpec:
    """The architecture and preprocessing of a trained (ensemble) model; see the module doc."""

    model: dict[str, Any]  # create_model kwargs: name and the model's own options
    in_chans: int
    image_size: int
    class_names: list[str]
    members: list[Member]
    num_classes: int = 2
    drop_rate: float = 0.0
    temperature: float = 1.0
    calibration_bias: float = 0.0  # Platt scaling's log-odds shift; 0 for temperature scaling
    calibration_method: str = "none"
    thresholds: dict[str, float] = field(default_factory=lambda: {DEFAULT_POINT: 0.5})
    operating_point: str = DEFAULT_POINT
    cam_layer: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    # per-channel {"mean": [...], "std": [...]} of [0, 1] pixels a pretrained network expects;
    # None: the paper's per-image standardisation
    normalization: dict[str, list[float]] | None = None
    tta: str = "none"  # test-time augmentation of every member (fus2net.inference.tta)
    resize: str = "stretch"  # how an image is fitted to the input (fus2net.images.resizing)

    @property
    def input_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The normalisation as `fus2net.data.transforms.normalize` takes it."""
        if self.normalization is None:
            return None
        return tuple(self.normalization["mean"]), tuple(self.normalization["std"])

    def calibrated(self, member_probs: np.ndarray) -> np.ndarray:
        """The ensemble's calibrated malignant probability from its members' (members, N)."""
        return calibrated_ensemble(member_probs, self.temperature, self.calibration_bias)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """What is done to an image before the model (the same code as training)."""
        return {
            "image_size": self.image_size,
            "channels": self.in_chans,
            "resize": (
                "bilinear to image_size x image_size, aspect ratio not kept"
                if self.resize == "stretch"
                else "bilinear, aspect ratio kept (longer side to image_size), padded black"
            ),
            "normalization": (
                "per-image standardization (x - mean) / std"
                if self.normalization is None
                else "per channel (x / 255 - mean) / std, as the pretrained weights expect"
            ),
        }

    def threshold(self, point: str | float | None = None) -> tuple[str, float]:
        """(name, threshold) of an operating point name, a number in [0, 1], or the default."""
        if point is None:
            point = self.operating_point
        if isinstance(point, float | int) or _is_number(point):
            value = float(point)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"operating point threshold must be in [0, 1], got {value}")
            return f"{value:g}", value
        if point not in self.thresholds:
            raise ValueError(
                f"unknown operating point {point!r}; this model has "
                f"{', '.join(sorted(self.thresholds))} or a threshold in [0, 1]"
            )
        return str(point), float(self.thresholds[point])

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / SPEC_FILE
        data = {"format": FORMAT, **asdict(self), "preprocessing": self.preprocessing}
        return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))

    @classmethod
    def read(cls, path: Path) -> ModelSpec:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable {SPEC_FILE} ({err})") from err
        found = data.get("format") if isinstance(data, dict) else None
        if found != FORMAT:
            raise ValueError(
                f"{path}: not a {FORMAT} file (format={found!r}); it is written by "
                "fus2net-train into the job's output folder"
            )
        data.pop("format")
        data.pop("preprocessing", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        missing = sorted(
            f.name for f in fields(cls) if f.name not in data and _is_required_field(f)
        )
        problems = [f"unknown field {name!r}" for name in unknown]
        problems += [f"missing field {name!r}" for name in missing]
        problems += spec_problems(data) if not missing else []
        if problems:
            raise ValueError(
                f"{path}: cannot be used: " + "; ".join(problems) + ". It is written by "
                "fus2net-train; export the model again rather than editing the file"
            )
        data["members"] = [Member(**m) for m in data["members"]]
        return cls(**data)


def _is_required_field(f: Field[Any]) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def _is_number(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def trained_spec(
    model: Mapping[str, Any],
    class_names: list[str],
    members: list[Member],
    *,
    in_chans: int,
    image_size: int,
    drop_rate: float,
    cam_layer: str,
    tta: str,
    resize: str,
) -> ModelSpec:
    """The spec of models trained as `create_model(**model, in_chans=..., drop_rate=...)`
    (no thresholds or calibration yet): the starting weights left out of `model`, since the
    members' weights replace them, and the input normalisation they expect written in."""
    from fus2net.models import input_normalization

    model = dict(model)
    normalization = input_normalization(model, in_chans)
    for starting_weights in ("pretrained_path", "pretrained", "pretrained_source"):
        model.pop(starting_weights, None)
    return ModelSpec(
        model=model,
        in_chans=in_chans,
        image_size=image_size,
        class_names=list(class_names),
        members=members,
        num_classes=len(class_names),
        drop_rate=drop_rate,
        cam_layer=cam_layer,
        tta=tta,
        resize=resize,
        normalization=(
            None
            if normalization is None
            else {"mean": list(normalization[0]), "std": list(normalization[1])}
        ),
    )


def export_package(spec_file: Path, folder: Path) -> Path:
    """A self-contained copy in `folder`: the spec, and each member's weights copied to
    weights/member_<i>.pt (what a registered model carries)."""
    spec = ModelSpec.read(spec_file)
    members = []
    for i, member in enumerate(spec.members):
        target = folder / "weights" / f"member_{i}.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec_file.parent / member.weights, target)
        members.append(Member(str(target.relative_to(folder)), member.fold))
    spec.members = members
    return spec.write(folder)


def verify_package(folder: Path) -> ModelSpec:
    """The spec of the package in `folder`, after checking it is complete: its
    `fus2net_model.json` passes `ModelSpec.read`'s checks and every member's weights file is
    inside the folder and a readable state dict (`load_weights`: not missing, empty, truncated
    or code). Why: a registered package is copied where its source is not; a gap found there
    is found too late. A ValueError names every problem."""
    spec = ModelSpec.read(folder / SPEC_FILE)
    base, problems = folder.resolve(), []
    for i, member in enumerate(spec.members):
        path = (folder / member.weights).resolve()
        if not path.is_relative_to(base):
            problems.append(f"members[{i}].weights {member.weights!r} is outside the folder")
        elif not path.is_file():
            problems.append(f"members[{i}].weights {member.weights} does not exist")
        else:
            try:
                state = load_weights(path)
            except ValueError as err:
                problems.append(f"members[{i}].weights: {err}")
                continue
            if not isinstance(state, dict):
                problems.append(f"members[{i}].weights {member.weights} holds no state dict")
    if problems:
        raise ValueError(
            f"{folder}: not a complete model package: " + "; ".join(problems) + ". Export it "
            "again from the job's output folder or the cell's runs"
        )
    return spec
