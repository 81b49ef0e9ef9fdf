"""fus2net-predict on a packaged model: any image in, bad files reported, overlays out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fus2net.cli.predict import describe_calibration, describe_operating_point, main
from fus2net.data.cache import load_resized
from fus2net.inference import (
    Member,
    ModelSpec,
    collect_images,
    load_model,
    load_package,
    predict_files,
)
from fus2net.inference.loading import build_member, load_from_run, to_tensor
from fus2net.inference.pyfunc import _load_pyfunc
from fus2net.inference.spec import export_package
from jobs import untrained_package

SIZE = 64


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job-output-like folder: two untrained fold models and their fus2net_model.json."""
    return untrained_package(
        tmp_path_factory.mktemp("job"),
        SIZE,
        drop_rate=0.5,
        temperature=2.0,
        thresholds={"default": 0.5, "sens95": 0.0, "youden": 1.0},
        operating_point="sens95",
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every kind of input: modes, sizes, a nested folder, a mask, and unreadable files."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), np.uint8)).save(root / "a_rgb.png")
    Image.fromarray(rng.integers(0, 65535, (90, 70), np.uint16)).save(root / "b_16bit.png")
    Image.fromarray(rng.integers(0, 255, (40, 50, 4), np.uint8), "RGBA").save(root / "c_rgba.png")
    Image.fromarray(rng.integers(0, 255, (7, 10), np.uint8)).convert("P").save(root / "d_tiny.png")
    (root / "nested").mkdir()
    Image.fromarray(rng.integers(0, 255, (300, 400), np.uint8)).save(root / "nested" / "e.jpg")
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(root / "nested" / "e_mask.png")
    (root / "f_empty.png").write_bytes(b"")
    (root / "g_text.png").write_text("not an image")
    return root


def test_collect_images_skips_masks_and_reports_missing(images: Path) -> None:
    files, problems = collect_images([images, images / "missing.png"])
    names = [f.name for f in files]
    assert "e.jpg" in names and "e_mask.png" not in names and len(files) == 7
    assert problems == [(str(images / "missing.png"), "no such file or folder")]


def test_predict_files_any_image_and_bad_files_by_name(
    package: Path, images: Path, tmp_path: Path
) -> None:
    frame = predict_files(load_package(package), [images], tmp_path)
    ok = frame[frame.error == ""]
    bad = frame[frame.error != ""]
    bad = bad.set_index(bad.path.map(lambda p: Path(p).name))
    assert len(ok) == 5 and set(bad.index) == {"f_empty.png", "g_text.png"}
    assert "zero-byte" in bad.loc["f_empty.png", "error"]
    assert "not an image" in bad.loc["g_text.png", "error"]
    assert ok.prob_malignant.between(0, 1).all()
    assert (ok.operating_point == "sens95").all() and (ok.predicted_class == "malignant").all()
    for row in ok.itertuples():
        with Image.open(row.path) as original, Image.open(row.overlay) as drawn:
            # the original beside its map, a colour bar and a caption (issue 25)
            assert drawn.width > drawn.height and original.size != drawn.size
    saved = pd.read_csv(tmp_path / "predictions.csv")
    assert list(saved.path) == list(frame.path)
    data = json.loads((tmp_path / "predictions.json").read_text())
    assert data["calibration"]["temperature"] == 2.0
    assert data["preprocessing"]["image_size"] == SIZE
    by_name = {Path(p["path"]).name: p for p in data["predictions"]}
    assert by_name["g_text.png"]["prob_malignant"] is None  # unreadable: null, not NaN


def test_ensemble_probability_is_the_members_mean(package: Path, images: Path) -> None:
    model = load_package(package)
    resized = np.stack([load_resized(images / "a_rgb.png", SIZE, 3)])
    expected = np.mean(
        [torch.softmax(m(to_tensor(resized, model.spec)), 1)[0, 1].item() for m in model.members]
    )
    assert model.probabilities(resized)[0] == pytest.approx(expected, abs=1e-6)
    one = load_package(package / "fold_1" / "model.pt")
    assert len(one.members) == 1
    member = build_member(one.spec, package / "fold_1" / "model.pt")
    assert one.probabilities(resized)[0] == pytest.approx(
        torch.softmax(member(to_tensor(resized, model.spec)), 1)[0, 1].item(), abs=1e-6
    )


def test_operating_points_by_name_and_number(package: Path) -> None:
    spec = load_package(package).spec
    assert spec.threshold() == ("sens95", 0.0)
    assert spec.threshold("youden") == ("youden", 1.0)
    assert spec.threshold("0.3") == ("0.3", 0.3)
    with pytest.raises(ValueError, match="default, sens95, youden"):
        spec.threshold("sens80")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        spec.threshold(1.5)


def test_exported_package_and_pyfunc_match(package: Path, tmp_path: Path) -> None:
    export_package(package / "fus2net_model.json", tmp_path / "pkg")
    assert sorted(p.name for p in (tmp_path / "pkg" / "weights").iterdir()) == [
        "member_0.pt",
        "member_1.pt",
    ]
    batch = np.random.default_rng(1).integers(0, 255, (2, 100, 80, 3), np.uint8)
    out = _load_pyfunc(str(tmp_path / "pkg")).predict(batch)
    assert list(out.columns) == [
        "prob_malignant",
        "prob_calibrated",
        "predicted_class",
        "threshold",
        "operating_point",
        "error",
    ]
    resized = np.stack(
        [
            np.asarray(Image.fromarray(b).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
            for b in batch
        ]
    )
    assert out.prob_malignant.to_numpy() == pytest.approx(
        load_package(package).probabilities(resized), abs=1e-6
    )


def test_loading_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"fus2net_model\.json"):
        load_package(tmp_path)
    with pytest.raises(FileNotFoundError, match="models:/"):
        load_model(str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="no MLflow store"):
        load_model("0" * 32, tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")


class ArtifactStore:
    """What `load_from_run` reads of a tracker: a refit-scored cell (spec lists only the refit
    model) and its fold run 1, artifacts served from local files."""

    def __init__(self, package: Path) -> None:
        spec = ModelSpec.read(package / "fus2net_model.json")
        spec.members = [Member("refit/model.pt", None)]
        self.spec_dir = package.parent / "refit_spec"
        spec.write(self.spec_dir)
        self.files = {
            ("cell", "model/fus2net_model.json"): self.spec_dir / "fus2net_model.json",
            ("cell", "checkpoint/refit/model.pt"): package / "fold_0" / "model.pt",
            ("fold1", "checkpoint/model.pt"): package / "fold_1" / "model.pt",
        }

    def get_run(self, run_id: str) -> SimpleNamespace:
        tags = {"fus2net.role": "cell"}
        if run_id == "fold1":
            tags = {"fus2net.role": "fold", "mlflow.parentRunId": "cell", "fus2net.fold": "1"}
        return SimpleNamespace(data=SimpleNamespace(tags=tags))

    def child_runs(self, run_id: str) -> list:
        return []

    def download_artifacts(self, run_id: str, path: str, dst: Path) -> Path:
        dst.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(self.files[(run_id, path)], dst / Path(path).name))


def test_a_fold_run_of_a_refit_cell_loads_its_own_weights(package: Path, tmp_path: Path) -> None:
    store = ArtifactStore(package)
    fold = load_from_run(store, "fold1", tmp_path / "fold")  # type: ignore[arg-type]
    assert [m.fold for m in fold.spec.members] == [1] and len(fold.members) == 1
    expected = build_member(fold.spec, package / "fold_1" / "model.pt")
    pairs = zip(fold.members[0].state_dict().values(), expected.state_dict().values(), strict=True)
    for got, want in pairs:
        assert torch.equal(got, want)
    cell = load_from_run(store, "cell", tmp_path / "cell")  # type: ignore[arg-type]
    assert [m.fold for m in cell.spec.members] == [None]
    spec = ModelSpec.read(store.spec_dir / "fus2net_model.json")
    spec.members = []
    spec.write(tmp_path / "empty")
    with pytest.raises(ValueError, match="lists no ensemble members"):
        load_package(tmp_path / "empty")


def test_cli_predicts_and_reports(
    package: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            str(package),
            str(images / "a_rgb.png"),
            str(images / "nested" / "e.jpg"),
            str(images / "f_empty.png"),
            "--out",
            str(tmp_path),
            "--operating-point",
            "youden",
            "--no-gradcam",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1, "an image that could not be predicted makes the exit code non-zero"
    lines = captured.out.splitlines()
    assert lines[0] == (
        f"model {package}: ensemble of 2 fold models (mean probability), fus2net, 64 px, "
        "3 channel(s)"
    )
    assert lines[1] == (
        "operating point youden (threshold 1, chosen on out-of-fold predictions to maximise "
        "Youden's J = sensitivity + specificity - 1): malignant when prob_malignant >= 1"
    )
    assert lines[2].startswith("calibration (T 2, bias +0, fitted on out-of-fold predictions)")
    header, *rows = lines[lines.index("") + 1 :]
    assert header.split() == ["image", "prob_malignant", "prob_calibrated", "class"]
    saved = pd.read_csv(tmp_path / "predictions.csv").set_index("path")
    assert [row.split()[0] for row in rows] == [
        str(images / "a_rgb.png"),
        str(images / "nested" / "e.jpg"),
    ], "the unreadable file is not in the table"
    for row in rows:
        path, raw, calibrated, predicted = row.split()
        assert float(raw) == pytest.approx(saved.loc[path, "prob_malignant"], abs=5e-4)
        assert float(calibrated) == pytest.approx(saved.loc[path, "prob_calibrated"], abs=5e-4)
        assert predicted == saved.loc[path, "predicted_class"] == "benign"  # threshold 1.0
    # aligned: every column starts (or, for the numbers, ends) at the header's place
    for name in ("prob_malignant", "prob_calibrated"):
        end = header.index(name) + len(name)
        assert all(row[end - 1] != " " and row[end] == " " for row in rows)
    assert all(row.index(row.split()[3]) == header.index("class") for row in rows)
    assert "f_empty.png" not in captured.out
    assert f"{images / 'f_empty.png'}\tERROR: zero-byte file" in captured.err
    assert "2 image(s) predicted at operating point youden, 1 failed" in captured.err
    assert not (tmp_path / "overlays").exists()
    assert main([str(tmp_path / "nope"), str(images)]) == 2
    assert main([str(package), str(images / "g_text.png"), "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "prob_malignant  prob_calibrated" not in captured.out, "no table without a prediction"
    assert "g_text.png\tERROR: " in captured.err


def test_cli_names_the_models_own_operating_point(
    package: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(package), str(images / "a_rgb.png"), "--out", str(tmp_path), "--no-gradcam"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (
        "operating point sens95 (threshold 0, chosen on out-of-fold predictions for 95 % "
        "sensitivity; the model's default): malignant when prob_malignant >= 0"
    )
    assert out[-1].split()[-1] == "malignant"
    assert main([*args, "--operating-point", "0.3"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "operating point 0.3 (threshold 0.3, given by --operating-point): "
        "malignant when prob_malignant >= 0.3"
    )


def test_operating_point_and_calibration_descriptions() -> None:
    assert describe_operating_point("sens95", 0.0190123) == (
        "operating point sens95 (threshold 0.01901, chosen on out-of-fold predictions for 95 % "
        "sensitivity; the model's default): malignant when prob_malignant >= 0.01901"
    )
    assert describe_operating_point("sens80", 0.2, given=True).startswith(
        "operating point sens80 (threshold 0.2, chosen on out-of-fold predictions for 80 % "
        "sensitivity)"
    )
    assert describe_operating_point("default", 0.5, given=True) == (
        "operating point default (threshold 0.5, the paper's decision rule): "
        "malignant when prob_malignant >= 0.5"
    )
    spec = ModelSpec(
        model={"name": "fus2net"},
        in_chans=1,
        image_size=SIZE,
        class_names=["benign", "malignant"],
        members=[Member("refit/model.pt", None)],
    )
    assert describe_calibration(spec) == "calibration none: prob_calibrated = prob_malignant"
    spec.calibration_method, spec.temperature, spec.calibration_bias = "platt", 1.4213, -0.6127
    assert describe_calibration(spec) == (
        "calibration platt (T 1.421, bias -0.6127, fitted on out-of-fold predictions): "
        "prob_calibrated = the members' mean of sigmoid(logit(p) / T + bias); "
        "the class uses prob_malignant"
    )
