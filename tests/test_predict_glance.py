"""fus2net-predict at a glance (issue 25): what the model was trained on, a notice for an image
unlike every training image, and overlays with the original, a colour bar and a caption."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fus2net.cli.predict import main
from fus2net.clinical.train_images import header_format, training_data
from fus2net.data.records import Record
from fus2net.inference import Member, ModelSpec, load_package, predict_files
from fus2net.inference.data_record import TrainingData
from fus2net.models import create_model

SIZE = 64
RECORDED = {
    "dataset": "synthetic",
    "fingerprint": "74526267995b290ae983b4c9c0a0d8455167f5c9f2f0ec4f515b1c621505635d",
    "training_data": {
        "dataset": "synthetic",
        "fingerprint": "74526267995b290ae983b4c9c0a0d8455167f5c9f2f0ec4f515b1c621505635d",
        "n_images": 54,
        "per_class": {"benign": 36, "malignant": 18},
        "trained": "2026-12-01T21:41:03+00:00",
        "newest_file": "2026-11-30T10:00:00+00:00",
        "width": [100, 200],
        "height": [100, 150],
        "modes": ["L"],
    },
}


def _package(root: Path, source: dict) -> Path:
    """One untrained Fus2Net member and its spec with `source`."""
    torch.manual_seed(0)
    model = create_model("fus2net", in_chans=3, num_classes=2)
    (root / "fold_0").mkdir(parents=True)
    torch.save(model.state_dict(), root / "fold_0" / "model.pt")
    ModelSpec(
        model={"name": "fus2net", "pool": "auto"},
        in_chans=3,
        image_size=SIZE,
        class_names=["benign", "malignant"],
        members=[Member("fold_0/model.pt", 0)],
        source=source,
    ).write(root)
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("glance_images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160), np.uint8)).save(root / "like.png")
    Image.fromarray(rng.integers(0, 255, (400, 640, 3), np.uint8)).save(root / "big_rgb.png")
    return root


def test_header_says_what_the_model_was_trained_on_and_flags_unlike_images(
    tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = _package(tmp_path / "pkg", RECORDED)
    out = tmp_path / "out"
    assert main([str(package), str(images), "--out", str(out), "--no-gradcam"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[3] == (
        "trained on synthetic: 54 images (fingerprint 74526267995b290a…), trained 2026-12-01, "
        "newest image file 2026-11-30; sizes 100-200 x 100-150 px, modes L"
    )
    notice = (
        "unlike the training images: its size 640x400 px is outside the training images' "
        "100-200 x 100-150; its mode RGB is not among the training images' L"
    )
    assert f"big_rgb.png\tNOTICE: {notice}" in captured.err
    assert "like.png\tNOTICE" not in captured.err.replace("big_rgb.png", "")
    saved = pd.read_csv(out / "predictions.csv", keep_default_na=False).set_index("path")
    assert saved.loc[str(images / "big_rgb.png"), "notice"].startswith(notice)
    assert saved.loc[str(images / "like.png"), "notice"] == ""
    data = json.loads((out / "predictions.json").read_text())
    assert data["training_data"]["n_images"] == 54 and data["training_data"]["modes"] == ["L"]


def test_an_older_spec_loads_and_says_not_recorded(
    tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = {"dataset": "synthetic", "fingerprint": "abcdef0123456789abcdef"}  # before issue 25
    package = _package(tmp_path / "pkg", old)
    args = [str(package), str(images / "big_rgb.png"), "--out", str(tmp_path), "--no-gradcam"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[3] == (
        "trained on synthetic: count not recorded (fingerprint abcdef0123456789…), date not "
        "recorded; sizes and modes not recorded"
    )
    assert "NOTICE" not in captured.err  # nothing to compare with: no notice made up
    assert TrainingData.from_source({}).describe().startswith("trained on not recorded:")


def test_a_bad_training_data_field_is_named_with_the_file(
    tmp_path: Path, images: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = {"training_data": {**RECORDED["training_data"], "width": [300, 10], "modes": "L"}}
    package = _package(tmp_path / "pkg", bad)
    assert main([str(package), str(images / "like.png"), "--out", str(tmp_path)]) == 2
    assert "fus2net_model.json: cannot be used" in caplog.text
    assert "source.training_data.width is [300, 10]; it must be [min, max]" in caplog.text
    assert "source.training_data.modes is 'L'" in caplog.text


def test_overlay_shows_the_original_beside_the_map_with_a_caption(
    tmp_path: Path, images: Path
) -> None:
    model = load_package(_package(tmp_path / "pkg", RECORDED))
    frame = predict_files(model, [images / "like.png"], tmp_path / "out", operating_point="0.5")
    (row,) = frame.itertuples()
    with Image.open(row.overlay) as drawn:
        assert drawn.width > drawn.height > 200  # two panels side by side, title and caption
        pixels = np.asarray(drawn.convert("RGB")).astype(int)
    left = pixels[:, : drawn.width // 3]
    # the original is shown as it is (grey), the right side has colour (the map and its bar)
    assert np.abs(pixels[..., 0] - pixels[..., 2]).max() > 100
    assert np.abs(left[..., 0] - left[..., 2]).max() < 10
    from fus2net.inference.predictor import _caption

    caption = _caption(model, 0.871, 0.655, "malignant", "sens95", 0.019, "predicted")
    assert caption.startswith(
        "malignant probability 0.871 (calibrated 0.655): malignant at operating point sens95 "
        "(malignant when the probability >= 0.019)."
    )


def test_a_package_records_its_training_pool(tmp_path: Path) -> None:
    files = []
    for i, (size, mode) in enumerate([((120, 80), "L"), ((300, 200), "RGB"), ((50, 60), "P")]):
        path = tmp_path / f"im{i}.png"
        Image.new(mode, size).save(path)
        files.append(path)
    turned = tmp_path / "turned.jpg"  # stored 120 x 80, EXIF says turn it: the decoder's 80 x 120
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (120, 80)).save(turned, exif=exif)
    assert header_format(turned) == (80, 120, "RGB")
    records = [Record(p, label) for p, label in zip([*files, turned], [0, 1, 0, 1], strict=True)]
    split = SimpleNamespace(train_pool=lambda: np.array([0, 1, 3]))  # im2 is the test set
    data = SimpleNamespace(
        records=records,
        split=split,
        class_names=["benign", "malignant"],
        description={"name": "synthetic"},
        fingerprint="f" * 64,
    )
    found = training_data(SimpleNamespace(data=data))["training_data"]
    assert found["n_images"] == 3 and found["per_class"] == {"benign": 1, "malignant": 2}
    assert found["width"] == [80, 300] and found["height"] == [80, 200]
    assert found["modes"] == ["L", "RGB"] and found["newest_file"] and found["trained"]
    record = TrainingData.from_source({"training_data": found})
    assert record.unlike((100, 100), "L") is None
    assert "mode P" in record.unlike((100, 100), "P")
