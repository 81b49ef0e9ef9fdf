"""Every field of a `fus2net_model.json`, checked once when it is read.

Why: the file travels (a job's folder, a run's artifacts, a registered model) and can be edited
by hand or damaged. A value out of range would otherwise surface deep inside the model as a
traceback (a negative image size), or pass silently and predict wrongly (one class name, a
weights path that loads another package's model). Each problem names its field, what it is and
what it must be; `ModelSpec.read` prefixes the file.
"""

from __future__ import annotations

import math
import ntpath
import posixpath
from collections.abc import Mapping
from typing import Any

from fus2net.evaluation.calibration import CALIBRATION_METHODS
from fus2net.images.resizing import RESIZE_MODES
from fus2net.inference.data_record import training_data_problems
from fus2net.inference.tta import TTA_MODES

# What a trained model can have been trained at: data.channels and a sane input size (a
# 4096 px square is 200 MB per image as float32; no model of the project is trained above 1024).
SPEC_CHANNELS = (1, 3)
SPEC_MIN_SIZE, SPEC_MAX_SIZE = 8, 4096
# Binary: prob_malignant is the softmax's second output, whatever the names are.
SPEC_NUM_CLASSES = 2


def _is_json_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    """A finite number (JSON's NaN and Infinity, and true/false, are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def weights_path_problem(weights: Any) -> str | None:
    """Why a member's weights path cannot be used, None when it can: it must be a relative path
    that stays inside the package folder (no absolute path, no `..` out of it), so that a
    package can only load its own weights and a moved folder still finds them."""
    if not isinstance(weights, str) or not weights.strip():
        return f"is {weights!r}, not a path"
    if posixpath.isabs(weights) or ntpath.isabs(weights) or ntpath.splitdrive(weights)[0]:
        return f"is the absolute path {weights!r}; it must be relative to the package folder"
    parts = posixpath.normpath(weights.replace("\\", "/")).split("/")
    if parts[0] == "..":
        return f"is {weights!r}, which points outside the package folder"
    return None


def _member_problems(members: Any) -> list[str]:
    if not isinstance(members, list):
        return [f"members is {members!r}; it must be a list of {{weights, fold}}"]
    if not members:
        return ["members is empty: it lists no ensemble members (at least one is needed)"]
    problems = []
    for i, member in enumerate(members):
        where = f"members[{i}]"
        if not isinstance(member, Mapping):
            problems.append(f"{where} is {member!r}, not a {{weights, fold}} object")
            continue
        unknown = sorted(set(member) - {"weights", "fold"})
        if unknown:
            problems.append(f"{where} has unknown field(s) {', '.join(unknown)}")
        why = weights_path_problem(member.get("weights"))
        if why:
            problems.append(f"{where}.weights {why}")
        fold = member.get("fold")
        if fold is not None and not (_is_json_int(fold) and fold >= 0):
            problems.append(f"{where}.fold is {fold!r}; it must be a fold index >= 0 or null")
    return problems


def _class_problems(data: Mapping[str, Any]) -> list[str]:
    problems = []
    num = data.get("num_classes", SPEC_NUM_CLASSES)
    if num != SPEC_NUM_CLASSES or not _is_json_int(num):
        problems.append(
            f"num_classes is {num!r}; it must be {SPEC_NUM_CLASSES} (benign, malignant: the "
            "malignant probability is the model's second output)"
        )
    names = data.get("class_names")
    if (
        not isinstance(names, list)
        or not all(isinstance(n, str) and n.strip() for n in names)
        or len(set(names)) != len(names)
    ):
        problems.append(f"class_names is {names!r}; it must list distinct class names")
    elif len(names) != SPEC_NUM_CLASSES:
        problems.append(
            f"class_names has {len(names)} name(s) ({', '.join(names) or 'none'}); it must "
            f"have {SPEC_NUM_CLASSES}, benign first"
        )
    return problems


def _normalization_problems(norm: Any, channels: Any) -> list[str]:
    if norm is None:
        return []
    if not isinstance(norm, Mapping) or set(norm) != {"mean", "std"}:
        return [f"normalization is {norm!r}; it must be null or {{mean: [...], std: [...]}}"]
    problems = []
    for key in ("mean", "std"):
        values = norm[key]
        if not isinstance(values, list) or not all(_is_finite_number(v) for v in values):
            problems.append(f"normalization.{key} is {values!r}; it must list finite numbers")
        elif _is_json_int(channels) and len(values) != channels:
            problems.append(
                f"normalization.{key} has {len(values)} value(s) for in_chans {channels}"
            )
        elif key == "std" and not all(v > 0 for v in values):
            problems.append(f"normalization.std is {values!r}; every value must be > 0")
    return problems


def _threshold_problems(data: Mapping[str, Any]) -> list[str]:
    thresholds = data.get("thresholds", {"default": 0.5})  # ModelSpec's defaults
    if not isinstance(thresholds, Mapping):
        return [f"thresholds is {thresholds!r}; it must map operating points to thresholds"]
    problems = [
        f"thresholds.{name} is {value!r}; it must be a number in [0, 1]"
        for name, value in thresholds.items()
        if not (_is_finite_number(value) and 0 <= value <= 1)
    ]
    point = data.get("operating_point", "default")
    if not isinstance(point, str) or point not in thresholds:
        problems.append(
            f"operating_point is {point!r}, which thresholds does not hold "
            f"({', '.join(map(str, thresholds)) or 'none'})"
        )
    return problems


def spec_problems(data: Mapping[str, Any]) -> list[str]:
    """Every problem of a spec's fields (the JSON object, `format` and `preprocessing`
    removed), each naming the field; empty when the spec can be used."""
    problems = []
    model = data.get("model")
    if not isinstance(model, Mapping) or not isinstance(model.get("name"), str):
        problems.append(f"model is {model!r}; it must be an object with the model's name")
    channels = data.get("in_chans")
    if channels not in SPEC_CHANNELS or not _is_json_int(channels):
        problems.append(f"in_chans is {channels!r}; it must be 1 or 3 (the input channels)")
    size = data.get("image_size")
    if not (_is_json_int(size) and SPEC_MIN_SIZE <= size <= SPEC_MAX_SIZE):
        problems.append(
            f"image_size is {size!r}; it must be a whole number of pixels from {SPEC_MIN_SIZE} "
            f"to {SPEC_MAX_SIZE} (the size the model was trained at)"
        )
    problems += _class_problems(data)
    problems += _member_problems(data.get("members"))
    drop = data.get("drop_rate", 0.0)
    if not (_is_finite_number(drop) and 0 <= drop < 1):
        problems.append(f"drop_rate is {drop!r}; it must be a number in [0, 1)")
    temperature = data.get("temperature", 1.0)
    if not (_is_finite_number(temperature) and temperature > 0):
        problems.append(f"temperature is {temperature!r}; it must be a finite number > 0")
    bias = data.get("calibration_bias", 0.0)
    if not _is_finite_number(bias):
        problems.append(f"calibration_bias is {bias!r}; it must be a finite number")
    for key, allowed, default in (
        ("calibration_method", CALIBRATION_METHODS, "none"),
        ("tta", TTA_MODES, "none"),
        ("resize", RESIZE_MODES, "stretch"),
    ):
        value = data.get(key, default)
        if value not in allowed:
            problems.append(f"{key} is {value!r}; it must be one of {', '.join(allowed)}")
    problems += _threshold_problems(data)
    problems += _normalization_problems(data.get("normalization"), channels)
    cam_layer = data.get("cam_layer")
    if cam_layer is not None and not isinstance(cam_layer, str):
        problems.append(f"cam_layer is {cam_layer!r}; it must be a layer name, auto or null")
    source = data.get("source", {})
    if not isinstance(source, Mapping):
        problems.append(f"source is {source!r}; it must be an object")
    else:
        problems += training_data_problems(source)
    return problems
