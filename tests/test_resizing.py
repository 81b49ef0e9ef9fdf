"""`data.resize=pad`: the aspect ratio kept on every path (training cache, external scoring,
prediction, Grad-CAM masks and overlays), and in the cell key only when it is asked for."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fus2net.cell.job_data import load_external
from fus2net.clinical.external import evaluate_external
from fus2net.config import groups as config_groups
from fus2net.config.factories import model_spec, resolved_container
from fus2net.config.messages import choices
from fus2net.config.validate import config_problems
from fus2net.data.cache import ImageCache, load_resized
from fus2net.data.records import Record
from fus2net.images.imageio import resized_mask
from fus2net.images.resizing import RESIZE_MODES, content_box, resize_image, resize_mask, unfit
from fus2net.inference import Member, ModelSpec, load_package, predict_files
from fus2net.inference.pyfunc import PyfuncModel
from fus2net.models import create_model
from fus2net.tracking.provenance import (
    KEYED_ONLY_WHEN_SET,
    _is_result_key,
    cell_key,
    flatten,
    is_evaluation_only,
)
from jobs import compose_train

SIZE = 64


def _disc(height: int, width: int, radius: int) -> np.ndarray:
    """(H, W) bool: a disc in the middle of a wide frame."""
    ys, xs = np.ogrid[:height, :width]
    return (ys - height / 2) ** 2 + (xs - width / 2) ** 2 <= radius**2


def _extent(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def test_pad_keeps_a_round_lesion_round_and_stretch_does_not() -> None:
    disc = _disc(100, 200, 40)  # BUSI-like: a frame wider than tall
    image = (disc * 200 + 30).astype(np.uint8)[:, :, None]
    rows, cols = _extent(resize_mask(disc, SIZE, "pad"))
    assert abs(rows - cols) <= 1
    rows, cols = _extent(resize_mask(disc, SIZE, "stretch"))
    assert rows == pytest.approx(2 * cols, abs=2)  # stretched to twice as tall as wide

    top, left, height, width = content_box(100, 200, SIZE, "pad")
    assert (top, left, height, width) == (16, 0, 32, 64)
    padded = resize_image(image, SIZE, 1, "pad")[:, :, 0]
    assert not padded[:top].any() and not padded[top + height :].any()  # black above, below
    assert (padded[top : top + height] >= 30).all()  # the frame, with no black inside
    mask = resize_mask(disc, SIZE, "pad")
    assert (
        padded[SIZE // 2, SIZE // 2] == 230 and mask[SIZE // 2, SIZE // 2]
    )  # image and mask agree
    assert mask[top : top + height].sum() == mask.sum()


def test_a_square_image_is_fitted_the_same_either_way() -> None:
    image = np.random.default_rng(0).integers(0, 256, (90, 90, 3), dtype=np.uint8)
    assert np.array_equal(resize_image(image, SIZE, 3, "pad"), resize_image(image, SIZE, 3))


def test_unfit_cuts_the_padding_off_a_map() -> None:
    top, left, height, width = content_box(300, 150, SIZE, "pad")  # taller than wide
    square = np.zeros((SIZE, SIZE), dtype=np.float32)
    square[top : top + height, left : left + width] = 1.0
    assert (unfit(square, 300, 150, "pad") == 1.0).all()
    assert unfit(square, 300, 150, "pad").shape == (64, 32)
    assert unfit(square, 300, 150, "stretch").shape == (SIZE, SIZE)


def test_an_unknown_fit_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"data\.resize must be one of stretch, pad"):
        resize_image(np.zeros((4, 4, 1), np.uint8), 8, 1, "crop")
    assert choices(config_groups.Data.model_fields["resize"]) == list(RESIZE_MODES)
    (problem,) = config_problems(compose_train("data.resize=crop"))
    assert "data.resize=crop" in problem and "pad" in problem


def _record(tmp_path: Path, name: str, shape: tuple[int, int]) -> Record:
    path = tmp_path / f"{name}.png"
    pixels = np.random.default_rng(len(name)).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return Record(image=path, label=0)


def test_the_caches_keep_the_fits_apart(tmp_path: Path) -> None:
    records = [_record(tmp_path, "wide", (40, 80)), _record(tmp_path, "tall", (80, 40))]
    stretched = ImageCache.build(records, 32, 1, "disk", tmp_path / "c", progress=False)
    padded = ImageCache.build(records, 32, 1, "disk", tmp_path / "c", False, resize="pad")
    assert stretched.path != padded.path and padded.path.name.endswith("-c1-pad.npy")
    assert stretched.path.name.endswith("-c1.npy")  # the name files had before data.resize
    for i, record in enumerate(records):
        assert np.array_equal(padded.images[i], load_resized(record.image, 32, 1, resize="pad"))
        assert np.array_equal(stretched.images[i], load_resized(record.image, 32, 1))
    in_memory = ImageCache.build(records, 32, 1, "memory", progress=False, resize="pad")
    assert np.array_equal(in_memory.images, padded.images)
    assert not np.array_equal(
        ImageCache.build(records, 32, 1, "memory", progress=False).images, in_memory.images
    )


def test_a_masks_fit_follows_its_image(tmp_path: Path) -> None:
    disc = _disc(40, 80, 12)
    Image.fromarray(disc.astype(np.uint8) * 255).save(tmp_path / "m.png")
    assert np.array_equal(
        resized_mask([tmp_path / "m.png"], 32, "pad"), resize_mask(disc, 32, "pad")
    )
    assert not np.array_equal(
        resized_mask([tmp_path / "m.png"], 32, "pad"), resized_mask([tmp_path / "m.png"], 32)
    )


def test_resize_enters_the_cell_key_only_when_it_is_set() -> None:
    """Cells keyed before `data.resize` existed keep their keys; `pad` is a new cell."""
    cfg = compose_train("experiment=improved")
    assert cfg.data.resize == "stretch"
    flat = flatten(resolved_container(cfg))
    flat["dataset.fingerprint"] = "data"
    # Keys added after this cell was keyed stay out of the key at their former value.
    later = {k for k, former in KEYED_ONLY_WHEN_SET.items() if flat.get(k, former) == former}
    assert "data.resize" in later
    # evaluation-only keys were result keys then, as they are hashed now: at their defaults
    kept = {
        k: v
        for k, v in flat.items()
        if (_is_result_key(k) or is_evaluation_only(k)) and k not in later
    }
    kept["trainer.compile"] = False  # provenance.KEYED_AT_FORMER_VALUE
    assert KEYED_ONLY_WHEN_SET["evaluation.tta"] != kept["evaluation.tta"]  # hflip: keyed
    former = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()
    assert cell_key(resolved_container(cfg), "data") == former[:16]
    pad = compose_train("experiment=improved", "data.resize=pad")
    assert cell_key(resolved_container(pad), "data") != former[:16]


def test_a_saved_model_keeps_its_fit_and_an_older_one_reads_as_stretch(tmp_path: Path) -> None:
    members = [Member("fold_0/model.pt", 0)]  # a package lists at least one (not loaded here)
    spec = model_spec(compose_train("data.resize=pad"), ["benign", "malignant"], members)
    assert spec.resize == "pad" and "aspect ratio kept" in spec.preprocessing["resize"]
    assert ModelSpec.read(spec.write(tmp_path / "a")).resize == "pad"
    older = json.loads((tmp_path / "a" / "fus2net_model.json").read_text())
    del older["resize"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "fus2net_model.json").write_text(json.dumps(older))
    assert ModelSpec.read(tmp_path / "b" / "fus2net_model.json").resize == "stretch"


@pytest.fixture(scope="module")
def padded_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("job")
    torch.manual_seed(0)
    model = create_model("fus2net", in_chans=3, num_classes=2, drop_rate=0.5)
    (root / "fold_0").mkdir()
    torch.save(model.state_dict(), root / "fold_0" / "model.pt")
    ModelSpec(
        model={"name": "fus2net", "pool": "auto"},
        in_chans=3,
        image_size=SIZE,
        class_names=["benign", "malignant"],
        members=[Member("fold_0/model.pt", 0)],
        resize="pad",
    ).write(root)
    return root


def test_prediction_fits_images_as_training_did(padded_package: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 256, (50, 120, 3), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    model = load_package(padded_package)
    padded = load_resized(tmp_path / "wide.png", SIZE, 3, resize="pad")
    expected = model.probabilities(padded[None])[0]
    assert expected != pytest.approx(
        model.probabilities(load_resized(tmp_path / "wide.png", SIZE, 3)[None])[0], abs=1e-6
    )  # the fit matters to this network, so the checks below could fail
    frame = predict_files(model, [tmp_path / "wide.png"], tmp_path / "out")
    assert frame.prob_malignant[0] == pytest.approx(expected, abs=1e-6)
    overlay = Image.open(frame.overlay[0])
    # drawn on the original, the padding cut off: a panel of the 120x50 image beside its map is
    # 3x as wide as tall; of the padded square it would be 1.7x
    assert overlay.width / overlay.height > 2.5
    served = PyfuncModel(model).predict(wide[None])
    assert served.prob_malignant[0] == pytest.approx(expected, abs=1e-6)


def test_an_external_set_is_scored_with_the_models_fit(
    padded_package: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(4)
    for label in ("benign", "malignant"):
        (tmp_path / "ext" / label).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (90, 40), dtype=np.uint8)  # taller than wide
            Image.fromarray(pixels).save(tmp_path / "ext" / label / f"{i}.png")
    dataset = {
        "_target_": "fus2net.data.sources.FolderSource",
        "root": str(tmp_path / "ext"),
        "classes": ["benign", "malignant"],
    }
    model = load_package(padded_package)
    evaluate_external(load_external("ext", dataset), model, [], tmp_path / "out")
    scored = pd.read_csv(tmp_path / "out" / "predictions.csv")
    images = np.stack([load_resized(Path(p), SIZE, 3, resize="pad") for p in scored.path])
    assert scored.prob.to_numpy() == pytest.approx(model.probabilities(images), abs=1e-6)
