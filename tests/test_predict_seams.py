"""fus2net-predict at its seams: a run in any experiment, a model package checked field by field
at load, and a probability that is not a number (issue 24)."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fus2net.cli.predict import main
from fus2net.tracking import schema
from fus2net.tracking.mlflow_tracker import MlflowTracker
from jobs import untrained_package

SIZE = 64
SPEC = "fus2net_model.json"


def _write_package(root: Path, nan_weights: bool = False) -> Path:
    """A job-output-like folder: two untrained fold models and their fus2net_model.json;
    `nan_weights`: every image gets a NaN probability."""
    return untrained_package(
        root,
        SIZE,
        nan_bias=nan_weights,
        thresholds={"default": 0.5, "sens95": 0.2},
        operating_point="sens95",
    )


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_package(tmp_path_factory.mktemp("job"))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scans") / "case_001.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80), np.uint8)).save(path)
    return path


# --- 1. a run id is global: any experiment of the store ---------------------------------------


@pytest.fixture(scope="module")
def other_experiment(package: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(store URI, cell run id) of a cell logged, as fus2net-train logs it, in experiment
    `paper-table3-baselines` of a store that has no experiment `fus2net`."""
    tmp = tmp_path_factory.mktemp("store")
    tracker = MlflowTracker(
        f"sqlite:///{tmp}/mlruns/mlflow.db", "paper-table3-baselines", str(tmp / "artifacts")
    )
    cell = tracker.start_run("model=fus2net", {schema.ROLE: "cell", schema.FOLDS_RUN: "0,1"})
    tracker.log_artifacts(cell, [package / SPEC], schema.MODEL_DIR)
    for fold in (0, 1):
        run = tracker.start_run(f"fold-{fold}", {schema.ROLE: "fold", schema.FOLD: str(fold)}, cell)
        tracker.log_artifacts(run, [package / f"fold_{fold}" / "model.pt"], schema.CHECKPOINT_DIR)
        tracker.end_run(run)
    tracker.end_run(cell)
    return tracker.uri, cell


def test_a_run_in_any_experiment_predicts_by_its_id(
    other_experiment: tuple[str, str], image: Path, tmp_path: Path, capsys, caplog
) -> None:
    uri, cell = other_experiment
    args = [str(image), "--tracking-uri", uri, "--out", str(tmp_path), "--no-gradcam"]
    assert main([f"runs:/{cell}", *args]) == 0, caplog.text
    out = capsys.readouterr().out
    assert out.startswith(f"model runs:/{cell}: ensemble of 2 fold models")
    assert str(image) in out.splitlines()[-1]
    saved = pd.read_csv(tmp_path / "predictions.csv")
    assert saved.error.isna().all() and saved.prob_malignant.between(0, 1).all()

    caplog.clear()
    assert main(["f" * 32, *args]) == 2
    assert f"no run {'f' * 32} in any experiment of the MLflow store" in caplog.text
    assert "--tracking-uri" in caplog.text and "--experiment" not in caplog.text


# --- 2. the package is checked at load, every field and weight path ---------------------------


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        spec[key] = value

    return change


def _weights(path: Callable[[Path], str]) -> Callable[[dict[str, Any], Path], None]:
    def change(spec: dict[str, Any], folder: Path) -> None:
        spec["members"][0]["weights"] = path(folder)

    return change


BAD_FIELDS: dict[str, tuple[Callable[..., None], str]] = {
    "negative size": (_set("image_size", -5), "image_size is -5"),
    "huge size": (_set("image_size", 10**9), "image_size is 1000000000"),
    "size as text": (_set("image_size", "32"), "image_size is '32'"),
    "two channels": (_set("in_chans", 2), "in_chans is 2"),
    "negative class count": (_set("num_classes", -1), "num_classes is -1"),
    "one class name": (_set("class_names", ["benign"]), "class_names has 1 name(s) (benign)"),
    "same class twice": (_set("class_names", ["a", "a"]), "class_names is ['a', 'a']"),
    "zero std": (
        _set("normalization", {"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}),
        "normalization.std",
    ),
    "std per channel": (_set("normalization", {"mean": [0.5], "std": [0.2]}), "normalization"),
    "NaN threshold": (_set("thresholds", {"default": math.nan}), "thresholds.default is nan"),
    "threshold above 1": (_set("thresholds", {"default": 1.5}), "thresholds.default is 1.5"),
    "unknown operating point": (_set("operating_point", "sens80"), "operating_point is 'sens80'"),
    "infinite temperature": (_set("temperature", math.inf), "temperature is inf"),
    "zero temperature": (_set("temperature", 0), "temperature is 0"),
    "NaN bias": (_set("calibration_bias", math.nan), "calibration_bias is nan"),
    "unknown resize": (_set("resize", "crop"), "resize is 'crop'"),
    "unknown tta": (_set("tta", "vflip"), "tta is 'vflip'"),
    "unknown field": (_set("colour", "blue"), "unknown field 'colour'"),
    "no members": (_set("members", []), "members is empty"),
    "negative fold": (lambda s: s["members"][0].update(fold=-1), "members[0].fold is -1"),
    "missing field": (lambda s: s.pop("image_size"), "missing field 'image_size'"),
}
BAD_WEIGHTS: dict[str, tuple[Callable[..., None], str]] = {
    "absolute path to another package": (
        _weights(lambda folder: str(folder.parent / "other" / "fold_0" / "model.pt")),
        "is the absolute path",
    ),
    "../ out of the package": (
        _weights(lambda folder: "../other/fold_0/model.pt"),
        "points outside the package folder",
    ),
    "../ down and out into another package": (
        _weights(lambda folder: "fold_0/../../other/fold_0/model.pt"),
        "points outside the package folder",
    ),
}


def _edited_copy(package: Path, tmp_path: Path, change: Callable[..., None]) -> Path:
    """A copy of `package` whose spec `change` edits, beside an intact package `other`."""
    shutil.copytree(package, tmp_path / "other")
    folder = tmp_path / "edited"
    shutil.copytree(package, folder)
    spec = json.loads((folder / SPEC).read_text())
    if change.__code__.co_argcount == 2:
        change(spec, folder)
    else:
        change(spec)
    (folder / SPEC).write_text(json.dumps(spec))  # NaN and Infinity as Python's json writes them
    return folder


@pytest.mark.parametrize("case", [*BAD_FIELDS, *BAD_WEIGHTS])
def test_a_bad_package_field_exits_2_naming_field_and_file(
    case: str, package: Path, image: Path, tmp_path: Path, caplog
) -> None:
    change, expected = {**BAD_FIELDS, **BAD_WEIGHTS}[case]
    folder = _edited_copy(package, tmp_path, change)
    code = main([str(folder), str(image), "--out", str(tmp_path / "out"), "--no-gradcam"])
    assert code == 2, "an uncaught error would have raised; a silent load returns 0"
    message = caplog.text
    assert str(folder / SPEC) in message and expected in message
    assert "Traceback" not in message
    assert not (tmp_path / "out" / "predictions.csv").exists(), "nothing predicted"


def test_every_problem_of_a_package_is_named_at_once(
    package: Path, image: Path, tmp_path: Path, caplog
) -> None:
    def change(spec: dict[str, Any]) -> None:
        spec.update(image_size=0, num_classes=3, tta="both")

    folder = _edited_copy(package, tmp_path, change)
    assert main([str(folder), str(image), "--out", str(tmp_path / "out")]) == 2
    for field in ("image_size is 0", "num_classes is 3", "tta is 'both'"):
        assert field in caplog.text


def test_a_package_with_its_weights_inside_loads(package: Path, image: Path, tmp_path: Path):
    """The check refuses only what leaves the folder: `./fold_0/../fold_0/model.pt` is inside."""
    folder = _edited_copy(package, tmp_path, _weights(lambda _: "./fold_0/../fold_0/model.pt"))
    assert main([str(folder), str(image), "--out", str(tmp_path / "out"), "--no-gradcam"]) == 0


# --- 3. a probability that is not a number is an error, never a class -------------------------


def test_a_nan_probability_is_an_error_row_and_exits_1(image: Path, tmp_path: Path, capsys) -> None:
    folder = _write_package(tmp_path / "nan", nan_weights=True)
    code = main([str(folder), str(image), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1
    assert "benign" not in captured.out, "no table row, no class"
    assert re.search(rf"{re.escape(str(image))}\tERROR: the model gave no usable probability "
                     r"\(prob_malignant nan", captured.err)  # fmt: skip
    assert "0 image(s) predicted at operating point sens95, 1 failed" in captured.err
    row = pd.read_csv(tmp_path / "out" / "predictions.csv").iloc[0]
    assert pd.isna(row.predicted_class) and pd.isna(row.prob_malignant)
    assert "no usable probability" in row.error
    saved = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert saved["predictions"][0]["predicted_class"] is None
    assert not (tmp_path / "out" / "overlays").exists(), "no heat map of a NaN"


def test_any_failed_image_makes_the_exit_code_non_zero(
    package: Path, image: Path, tmp_path: Path, capsys
) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    args = ["--out", str(tmp_path / "out"), "--no-gradcam"]
    assert main([str(package), str(image), *args]) == 0
    assert main([str(package), str(image), str(empty), *args]) == 1
    captured = capsys.readouterr()
    assert "1 image(s) predicted at operating point sens95, 1 failed" in captured.err


def test_a_registered_model_gives_no_class_for_a_nan_probability(tmp_path: Path) -> None:
    """The pyfunc model a registered version loads answers as fus2net-predict does."""
    from fus2net.inference.pyfunc import _load_pyfunc

    folder = _write_package(tmp_path / "nan", nan_weights=True)
    batch = np.random.default_rng(1).integers(0, 255, (2, 70, 90, 3), np.uint8)
    out = _load_pyfunc(str(folder)).predict(batch)
    assert out.prob_malignant.isna().all()
    assert out.predicted_class.isna().all(), "no class, never benign"
