"""Splits: disjoint, stratified, group- and duplicate-aware, reproducible, reused from disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fus2net.data import splits as splits_module
from fus2net.data.records import DataError, Record
from fus2net.data.splits import Split, make_split, records_fingerprint
from fus2net.images.duplicates import connected_groups, find_duplicate_groups, near_pairs

BUSI = Path(__file__).resolve().parents[2] / "shared/data/busi/Dataset_BUSI_with_GT"


def _write_image(path: Path, rng: np.random.Generator) -> Path:
    """A random 48x40 texture, smooth enough for a stable pHash, distinct from every other."""
    coarse = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(coarse).resize((40, 48), Image.Resampling.BICUBIC).save(path)
    return path


def _records(folder: Path, counts: tuple[int, ...], seed: int = 0, per_patient: int = 1):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for label, n in enumerate(counts):
        for i in range(n):
            path = _write_image(folder / f"c{label}_{i:03d}.png", rng)
            group = f"p{label}_{i // per_patient}" if per_patient > 1 else None
            records.append(Record(image=path, label=label, group=group))
    return records


def _labels(records) -> np.ndarray:
    return np.array([r.label for r in records])


def _unit_of(split: Split) -> dict[int, str]:
    """Which part (test or fold k) every record index is in."""
    where = {int(i): "test" for i in split.test}
    for k, fold in enumerate(split.folds):
        where.update({int(i): f"fold{k}" for i in fold})
    return where


def test_parts_disjoint_and_cover_everything(tmp_path):
    records = _records(tmp_path / "data", (30, 20))
    split = make_split(records, folds=5, seed=1, test_fraction=0.2, dedupe=False)
    parts = [split.test, *split.folds]
    assert sum(len(p) for p in parts) == len(records)
    assert len(np.unique(np.concatenate(parts))) == len(records)
    for k in range(5):
        train, val = split.fold(k)
        assert not np.intersect1d(train, val).size
        assert not np.intersect1d(train, split.test).size
        np.testing.assert_array_equal(np.union1d(train, val), split.train_pool())


def test_folds_are_stratified_within_one_image(tmp_path):
    records = _records(tmp_path / "data", (37, 18))
    labels = _labels(records)
    split = make_split(records, folds=5, seed=3, test_fraction=0.2, dedupe=False)
    np.testing.assert_array_equal(np.bincount(labels[split.test]), [7, 4])  # round(0.2 * n)
    pool_counts = np.bincount(labels[split.train_pool()])
    for fold in split.folds:
        assert np.all(np.abs(np.bincount(labels[fold], minlength=2) - pool_counts / 5) < 1)


def test_test_per_class_gives_exact_counts(tmp_path):
    records = _records(tmp_path / "data", (20, 12))
    split = make_split(records, folds=3, seed=0, test_per_class=[5, 4], dedupe=False)
    np.testing.assert_array_equal(np.bincount(_labels(records)[split.test]), [5, 4])


def test_same_seed_same_split_any_record_order(tmp_path):
    records = _records(tmp_path / "data", (20, 12))
    a = make_split(records, folds=4, seed=7, test_fraction=0.25, dedupe=False)
    shuffled = [records[i] for i in np.random.default_rng(0).permutation(len(records))]
    b = make_split(shuffled, folds=4, seed=7, test_fraction=0.25, dedupe=False)
    names = [r.image.name for r in records]
    shuffled_names = [r.image.name for r in shuffled]
    assert sorted(names[i] for i in a.test) == sorted(shuffled_names[i] for i in b.test)
    for fa, fb in zip(a.folds, b.folds, strict=True):
        assert sorted(names[i] for i in fa) == sorted(shuffled_names[i] for i in fb)
    c = make_split(records, folds=4, seed=8, test_fraction=0.25, dedupe=False)
    assert not all(np.array_equal(x, y) for x, y in zip(a.folds, c.folds, strict=True))


def test_split_file_is_saved_and_reused(tmp_path, monkeypatch):
    records = _records(tmp_path / "data", (16, 10))
    kwargs = dict(folds=3, seed=0, test_per_class=[3, 2], dedupe=True, cache_dir=tmp_path / "c")
    first = make_split(records, **kwargs)
    assert first.path is not None and first.path.is_file()
    assert first.path.parent == tmp_path / "c" / "splits"
    assert first.path.name.startswith(first.fingerprint[:16])

    def must_not_recompute(*args, **kw):
        raise AssertionError("split recomputed instead of loaded")

    monkeypatch.setattr(splits_module, "find_duplicate_groups", must_not_recompute)
    reversed_records = records[::-1]
    again = make_split(reversed_records, **kwargs)
    n = len(records) - 1
    np.testing.assert_array_equal(np.sort(n - again.test), first.test)
    assert [sorted(n - f) for f in again.folds] == [f.tolist() for f in first.folds]


def test_fingerprint_tracks_content_and_labels_not_location(tmp_path):
    records = _records(tmp_path / "a", (4, 3))
    fingerprint = records_fingerprint(records)
    relabelled = [Record(r.image, 1 - r.label) if i == 0 else r for i, r in enumerate(records)]
    assert records_fingerprint(relabelled) != fingerprint

    shutil.copytree(tmp_path / "a", tmp_path / "moved" / "b")
    moved = [Record(tmp_path / "moved" / "b" / r.image.name, r.label) for r in records]
    assert records_fingerprint(moved) == fingerprint

    _write_image(moved[0].image, np.random.default_rng(99))
    assert records_fingerprint(moved) != fingerprint


def test_patient_groups_never_cross_parts(tmp_path):
    records = _records(tmp_path / "data", (30, 18), per_patient=3)
    split = make_split(records, folds=4, seed=2, test_fraction=0.2, dedupe=False)
    where = _unit_of(split)
    by_group: dict[str, set[str]] = {}
    for i, r in enumerate(records):
        by_group.setdefault(r.group, set()).add(where[i])
    assert all(len(parts) == 1 for parts in by_group.values())


def test_copies_and_noisy_copies_are_one_group_in_one_fold(tmp_path):
    records = _records(tmp_path / "data", (14, 10))
    source = records[0].image
    exact = tmp_path / "data" / "c0_copy.png"
    shutil.copyfile(source, exact)
    pixels = np.asarray(Image.open(source), dtype=np.int16)
    noise = np.random.default_rng(5).integers(-6, 7, pixels.shape)
    noisy = tmp_path / "data" / "c0_noisy.png"
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(noisy)
    records += [Record(exact, 0), Record(noisy, 0)]
    n = len(records)

    groups = find_duplicate_groups([r.image for r in records], max_distance=4)
    assert groups == [[0, n - 2, n - 1]]

    split = make_split(records, folds=3, seed=0, test_fraction=0.25, dedupe=True)
    assert split.duplicate_groups == [[0, n - 2, n - 1]]
    where = _unit_of(split)
    assert where[0] == where[n - 2] == where[n - 1]


def test_near_pairs_and_components():
    hashes = np.array([0, 0b111, 0b1111_0000_0000, (1 << 64) - 1, (1 << 64) - 2], dtype=np.uint64)
    pairs = {tuple(p) for p in near_pairs(hashes, 3).tolist()}
    assert pairs == {(0, 1), (3, 4)}
    assert connected_groups(5, [(0, 1), (1, 2), (3, 3)]) == [[0, 1, 2]]
    assert near_pairs(hashes, 64).shape == (10, 2)


def test_too_few_images_raise_clear_errors(tmp_path):
    records = _records(tmp_path / "data", (12, 6))
    with pytest.raises(DataError, match=r"class 1: has 6 images; data.test.per_class asks for 8"):
        make_split(records, folds=3, seed=0, test_per_class=[3, 8], dedupe=False)
    with pytest.raises(DataError, match=r"class 1: has 4 images .* fewer than cv.folds=5"):
        make_split(records, folds=5, seed=0, test_per_class=[2, 2], dedupe=False)
    with pytest.raises(ValueError, match="not both"):
        make_split(records, folds=3, seed=0, test_fraction=0.2, test_per_class=[1, 1])


def _busi_records() -> list[Record]:
    records = []
    for label, name in enumerate(("benign", "malignant")):
        images = sorted(p for p in (BUSI / name).glob("*.png") if "_mask" not in p.name)
        records += [Record(image=p, label=label) for p in images]
    return records


@pytest.mark.busi
@pytest.mark.skipif(not BUSI.is_dir(), reason="BUSI not found beside the checkout")
def test_busi_paper_split(tmp_path):
    records = _busi_records()
    labels = _labels(records)
    kwargs = dict(folds=10, seed=42, test_per_class=[50, 50], dedupe=True, duplicate_distance=4)
    split = make_split(records, cache_dir=tmp_path, **kwargs)
    assert len(split.duplicate_groups) > 50  # BUSI has ~100 near-duplicate groups at distance 4
    np.testing.assert_array_equal(np.bincount(labels[split.test]), [50, 50])
    parts = np.concatenate([split.test, *split.folds])
    assert len(parts) == len(np.unique(parts)) == len(records)
    pool_counts = np.bincount(labels[split.train_pool()])
    for fold in split.folds:  # duplicate groups (up to 4 images) make folds slightly uneven
        assert np.all(np.abs(np.bincount(labels[fold], minlength=2) - pool_counts / 10) <= 3)
    where = _unit_of(split)
    assert all(len({where[i] for i in group}) == 1 for group in split.duplicate_groups)
    fresh = make_split(records, cache_dir=None, **kwargs)
    np.testing.assert_array_equal(fresh.test, split.test)
    assert all(np.array_equal(a, b) for a, b in zip(fresh.folds, split.folds, strict=True))
