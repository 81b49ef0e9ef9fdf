"""Preprocessing pipeline: cache, standardisation, augmentation presets, balance, datamodule."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from fus2net.data.balance import AS_IS, HORIZONTAL, VERTICAL, balance_indices, class_weights
from fus2net.data.cache import ImageCache, load_resized
from fus2net.data.datamodule import FoldDataModule
from fus2net.data.records import Record
from fus2net.data.transforms import (
    DepthAttenuation,
    ScannerMarks,
    build_augmentation,
    standardize,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


def _augmentation_cfg(name: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(overrides=[f"+augmentation={name}"], config_name=None).augmentation


# ---- balance -------------------------------------------------------------------------------


def test_flip_balance_matches_classes_with_training_images_only():
    labels = np.array([0] * 30 + [1] * 12 + [0] * 5 + [1] * 5)  # last 10: validation / test
    train_idx = np.arange(42)
    items = balance_indices(train_idx, labels, "flip", np.random.default_rng(0))
    indices = np.array([i for i, _ in items])
    assert set(indices) <= set(train_idx)
    np.testing.assert_array_equal(np.bincount(labels[indices]), [30, 30])
    assert sorted(i for i, code in items if code == AS_IS) == train_idx.tolist()
    copies = [(i, code) for i, code in items if code != AS_IS]
    assert {code for _, code in copies} == {HORIZONTAL, VERTICAL}
    assert len(copies) == len(set(copies)) == 18  # 9 images x (H, V), no copy twice
    assert all(labels[i] == 1 for i, _ in copies)


def test_flip_balance_paper_numbers_and_beyond_twice_the_minority():
    labels = np.array([0] * 646 + [1] * 306)
    items = balance_indices(np.arange(952), labels, "flip", np.random.default_rng(1))
    flipped = [i for i, code in items if code != AS_IS]
    assert len(flipped) == 340 and len(set(flipped)) == 170  # the paper: 170 images, 2 copies each

    labels = np.array([0] * 20 + [1] * 3)  # needs 17 copies of 3 images: repeats, still balanced
    items = balance_indices(np.arange(23), labels, "flip", np.random.default_rng(2))
    np.testing.assert_array_equal(np.bincount(labels[[i for i, _ in items]]), [20, 20])


def test_none_and_weighted_keep_the_training_set_and_weights_balance_it():
    labels = np.array([0, 0, 0, 1, 1, 0])
    for mode in ("none", "weighted"):
        assert balance_indices(np.arange(4), labels, mode, np.random.default_rng()) == [
            (0, 0),
            (1, 0),
            (2, 0),
            (3, 0),
        ]
    weights = class_weights(labels[:4])
    np.testing.assert_allclose(weights, [4 / 6, 2.0])
    np.testing.assert_allclose(weights * np.bincount(labels[:4]), 2.0)  # equal total weight
    np.testing.assert_allclose(class_weights(np.array([0, 0]), num_classes=2), [1.0, 0.0])


# ---- preprocessing -------------------------------------------------------------------------


def test_standardize_per_image():
    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    x = standardize(image)
    assert x.dtype == np.float32 and x.shape == image.shape
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-4
    flat = standardize(np.full((8, 8, 1), 7, np.uint8))
    assert np.all(flat == 0)


@pytest.mark.parametrize("channels", [1, 3])
def test_image_cache_modes(tmp_path, channels):
    rng = np.random.default_rng(channels)
    records = []
    for i in range(5):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)).save(path)
        records.append(Record(path, i % 2))
    expected = load_resized(records[2].image, 16, channels)
    reference = Image.open(records[2].image).convert("RGB" if channels == 3 else "L")
    reference = np.asarray(reference.resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(expected.reshape(reference.shape), reference)

    for mode in ("none", "memory", "disk"):
        cache = ImageCache.build(records, 16, channels, mode, tmp_path / "cache", progress=False)
        assert cache.images.shape == (5, 16, 16, channels) and cache.images.dtype == np.uint8
        np.testing.assert_array_equal(cache.images[2], expected)
        np.testing.assert_array_equal(cache.labels, [0, 1, 0, 1, 0])
    assert cache.path is not None and cache.path.parent == tmp_path / "cache" / "images"
    reused = ImageCache.build(records, 16, channels, "disk", tmp_path / "cache", progress=False)
    assert isinstance(reused.images, np.memmap)
    np.testing.assert_array_equal(reused.images, cache.images)


# ---- augmentation --------------------------------------------------------------------------


def test_none_preset_is_null():
    cfg = _augmentation_cfg("none")
    assert cfg is None and hydra.utils.instantiate(cfg) is None and build_augmentation(cfg) is None


@pytest.mark.parametrize("preset", ["paper", "ultrasound", "ultrasound_marks"])
@pytest.mark.parametrize("channels", [1, 3])
def test_presets_instantiate_and_keep_shape_and_dtype(preset, channels):
    pipeline = hydra.utils.instantiate(_augmentation_cfg(preset))
    assert isinstance(pipeline, A.Compose) and len(pipeline.transforms) >= 4
    pipeline.set_random_seed(0)
    image = np.random.default_rng(0).integers(0, 256, (40, 40, channels), dtype=np.uint8)
    outputs = [pipeline(image=image)["image"] for _ in range(4)]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outputs)
    assert any(not np.array_equal(o, image) for o in outputs)


def test_depth_attenuation_darkens_with_depth():
    image = np.full((11, 4, 1), 200, np.uint8)
    out = DepthAttenuation(attenuation=(0.5, 0.5), p=1.0)(image=image)["image"]
    assert out.shape == image.shape and out.dtype == np.uint8
    assert out[0, 0, 0] == 200 and out[-1, 0, 0] == 100
    assert np.all(np.diff(out[:, 0, 0].astype(int)) <= 0)
    with pytest.raises(ValueError):
        DepthAttenuation(attenuation=(0.5, 1.2))


@pytest.mark.parametrize("channels", [1, 3])
def test_scanner_marks_are_bright_pixels_laid_over_the_image(channels):
    image = np.full((128, 128, channels), 60, np.uint8)
    marks = ScannerMarks(p=1.0)
    marks.set_random_seed(0)
    outputs = [marks(image=image)["image"] for _ in range(8)]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outputs)
    assert all((o >= image).all() for o in outputs)  # marks only add light, never darken
    changed = [(o > image).any(axis=2) for o in outputs]
    assert all(0 < c.mean() < 0.05 for c in changed)  # a few thin marks, not a veil
    assert len({c.tobytes() for c in changed}) == len(changed)  # new marks in every image
    assert all((o == o[:, :, :1]).all() for o in outputs)  # the same grey in every channel
    again = ScannerMarks(p=1.0)
    again.set_random_seed(0)
    assert np.array_equal(again(image=image)["image"], outputs[0])  # seeded: reproducible
    assert np.array_equal(ScannerMarks(p=0.0)(image=image)["image"], image)
    with pytest.raises(ValueError):
        ScannerMarks(frame_size=8)


def test_the_marks_preset_is_the_ultrasound_preset_and_the_marks():
    """The two presets differ by the marks alone: ablating them changes nothing else."""
    plain, marked = _augmentation_cfg("ultrasound"), _augmentation_cfg("ultrasound_marks")
    assert marked.transforms[:-1] == plain.transforms
    assert marked.transforms[-1]._target_ == "fus2net.data.transforms.ScannerMarks"


# ---- datamodule ----------------------------------------------------------------------------


def _datamodule(channels=3, seed=0, balance="flip", images=None, **kwargs) -> FoldDataModule:
    rng = np.random.default_rng(123)
    if images is None:
        images = rng.integers(0, 256, (40, 24, 24, channels), dtype=np.uint8)
    images.setflags(write=False)  # as the shared in-memory cache and the disk memory map are
    labels = np.array([0, 0, 1] * 13 + [0])
    return FoldDataModule(
        images,
        labels,
        train_idx=np.arange(0, 28),
        val_idx=np.arange(28, 34),
        test_idx=np.arange(34, 40),
        batch_size=kwargs.pop("batch_size", 8),
        augmentation=kwargs.pop("augmentation", build_augmentation(_augmentation_cfg("paper"))),
        balance=balance,
        seed=seed,
        **kwargs,
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_batches_are_shaped_standardised_and_indexed(channels):
    dm = _datamodule(channels)
    x, y, idx = next(iter(dm.train_dataloader()))
    assert x.shape == (8, channels, 24, 24) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and idx.dtype == torch.int64 and y.shape == idx.shape == (8,)
    torch.testing.assert_close(x.mean(dim=(1, 2, 3)), torch.zeros(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(1, 2, 3), correction=0), torch.ones(8), atol=1e-3, rtol=0)
    np.testing.assert_array_equal(y.numpy(), dm.labels[idx.numpy()])
    seen = torch.cat([b[2] for b in dm.train_dataloader()])
    assert len(seen) == len(dm.train_items) == 2 * 19  # 19 benign, 9 malignant + 10 copies
    assert set(seen.tolist()) == set(range(28))
    assert torch.cat([b[2] for b in dm.test_dataloader()]).tolist() == list(range(34, 40))


def test_validation_and_test_are_not_augmented():
    dm = _datamodule()
    first, second = list(dm.val_dataloader()), list(dm.val_dataloader())
    for (xa, _, ia), (xb, _, ib) in zip(first, second, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ia, ib)
    x, _, idx = next(iter(dm.test_dataloader()))
    expected = np.stack([standardize(dm.images[i]).transpose(2, 0, 1) for i in idx.numpy()])
    np.testing.assert_array_equal(x.numpy(), expected)


def test_training_is_reproducible_from_the_seed():
    def first_batch(seed):
        return next(iter(_datamodule(seed=seed).train_dataloader()))

    a, b, c = first_batch(1), first_batch(1), first_batch(2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert not torch.equal(a[2], c[2])


def test_workers_get_distinct_reproducible_augmentation():
    same = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 24, 24, 1), np.uint8), 40, 0)

    def batches():
        dm = _datamodule(images=same, balance="none", num_workers=2, batch_size=4)
        loader = dm.train_dataloader()
        out = [b[0] for _, b in zip(range(2), loader, strict=False)]
        del loader
        return out

    run1, run2 = batches(), batches()
    assert not torch.equal(run1[0], run1[1])  # worker 0 and worker 1 augment differently
    assert all(torch.equal(a, b) for a, b in zip(run1, run2, strict=True))


def test_weighted_balance_sets_loss_weights_or_a_sampler():
    dm = _datamodule(balance="weighted")
    assert len(dm.train_items) == 28
    torch.testing.assert_close(dm.class_weights, torch.tensor([28 / 38, 28 / 18]))
    dm = _datamodule(balance="weighted", sampler_weighting=True)
    assert dm.class_weights is None
    labels = torch.cat([b[1] for _ in range(10) for b in dm.train_dataloader()])
    assert 0.4 < labels.float().mean().item() < 0.6  # classes drawn equally often
