"""The synthetic default dataset: layout, determinism, reuse, and class descriptors with overlap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import ConvexHull
from sklearn.metrics import roc_auc_score

from fus2net.cli import grid
from fus2net.synthetic import generator as synthetic
from fus2net.synthetic.generator import (
    MANIFEST,
    SyntheticDatasetMismatch,
    expected_files,
    generate_dataset,
)
from fus2net.synthetic.lesion import lesion_distance, sample_lesion

SMALL = {"n_images": 12, "image_size": 96, "progress": False}


def _bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _lesion_masks(malignant: bool, n: int, overlap: float = synthetic.DEFAULT_OVERLAP) -> list:
    rng = np.random.default_rng(1 + malignant)
    return [lesion_distance(sample_lesion(rng, malignant, overlap), rng, 128) < 1 for _ in range(n)]


def _taller_than_wide(mask: np.ndarray) -> bool:
    ys, xs = np.nonzero(mask)
    return np.ptp(ys) > np.ptp(xs)


def _solidity(mask: np.ndarray) -> float:
    """Area over convex-hull area: 1 for an oval, lower for lobulated/angular/spiculated margins."""
    points = np.argwhere(mask)
    return float(mask.sum() / ConvexHull(points).volume)


def test_layout_naming_ratio_and_masks(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "syn", **SMALL)
    assert sorted(p.name for p in root.iterdir()) == ["benign", "malignant", MANIFEST]
    benign = sorted(p.name for p in (root / "benign").iterdir())
    malignant = sorted(p.name for p in (root / "malignant").iterdir())
    assert len(benign) == 2 * 8 and len(malignant) == 2 * 4  # 2:1, image + mask each
    assert "benign (1).png" in benign and "benign (8)_mask.png" in benign
    assert "malignant (4).png" in malignant and "malignant (5).png" not in malignant
    for rel in expected_files({"benign": 8, "malignant": 4}):
        if rel.endswith("_mask.png"):
            continue
        with (
            Image.open(root / rel) as image,
            Image.open(root / rel.replace(".png", "_mask.png")) as m,
        ):
            assert image.mode == "L" and m.mode == "L"
            assert image.size == m.size == (96, 96)
            mask = np.asarray(m)
        assert set(np.unique(mask)) == {0, 255}
        assert 0.002 < (mask > 0).mean() < 0.6  # a lesion, inside the frame, not the whole image
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["params"]["overlap"] == synthetic.DEFAULT_OVERLAP
    assert manifest["counts"] == {"benign": 8, "malignant": 4}


def test_deterministic_per_seed_and_independent_of_n_and_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _bytes(generate_dataset(tmp_path / "a", **SMALL))
    assert first == _bytes(generate_dataset(tmp_path / "b", **SMALL))
    other_seed = _bytes(generate_dataset(tmp_path / "c", seed=1, **SMALL))
    assert all(first[k] != other_seed[k] for k in first)
    fewer = _bytes(generate_dataset(tmp_path / "d", n_images=6, image_size=96, progress=False))
    assert all(first[k] == v for k, v in fewer.items())  # benign (3) is benign (3) whatever n is
    monkeypatch.setattr(synthetic, "MIN_IMAGES_FOR_POOL", 1)  # force the process pool
    assert first == _bytes(generate_dataset(tmp_path / "e", **SMALL))


def test_reuse_does_not_rewrite(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "syn", **SMALL)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate_dataset(root, **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_missing_file_regenerates(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "syn", **SMALL)
    (root / "malignant" / "malignant (2)_mask.png").unlink()
    generate_dataset(root, **SMALL)
    assert (root / "malignant" / "malignant (2)_mask.png").is_file()


def test_other_parameters_or_foreign_folder_raise(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "syn", **SMALL)
    with pytest.raises(SyntheticDatasetMismatch, match="delete that folder"):
        generate_dataset(root, n_images=12, image_size=96, overlap=0.5, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SyntheticDatasetMismatch, match="not a synthetic dataset"):
        generate_dataset(foreign, **SMALL)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fail_on_third(job: tuple) -> None:
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_render_and_write", fail_on_third)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "syn", **SMALL)
    assert list(tmp_path.iterdir()) == []  # neither root nor a staging folder


def test_invalid_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="overlap"):
        generate_dataset(tmp_path / "x", overlap=0.0, progress=False)
    with pytest.raises(ValueError, match="malignant_fraction"):
        generate_dataset(tmp_path / "x", malignant_fraction=1.0, progress=False)


def test_descriptors_differ_by_class_on_average() -> None:
    benign, malignant = _lesion_masks(False, 150), _lesion_masks(True, 150)
    taller_b = np.mean([_taller_than_wide(m) for m in benign])
    taller_m = np.mean([_taller_than_wide(m) for m in malignant])
    assert taller_m > taller_b + 0.25
    solidity_b = np.array([_solidity(m) for m in benign])
    solidity_m = np.array([_solidity(m) for m in malignant])
    assert solidity_m.mean() < solidity_b.mean() - 0.05


def test_classes_overlap() -> None:
    """Some benign lesions are more irregular than some malignant ones: no feature separates."""
    solidity_b = np.array([_solidity(m) for m in _lesion_masks(False, 150)])
    solidity_m = np.array([_solidity(m) for m in _lesion_masks(True, 150)])
    labels = np.r_[np.zeros(150), np.ones(150)]
    auc = roc_auc_score(labels, -np.r_[solidity_b, solidity_m])
    assert 0.65 < auc < 0.97
    assert (solidity_b < np.quantile(solidity_m, 0.75)).mean() > 0.1
    assert (solidity_m > np.quantile(solidity_b, 0.25)).mean() > 0.1


def test_full_overlap_makes_classes_indistinguishable() -> None:
    solidity_b = [_solidity(m) for m in _lesion_masks(False, 150, overlap=1.0)]
    solidity_m = [_solidity(m) for m in _lesion_masks(True, 150, overlap=1.0)]
    auc = roc_auc_score(np.r_[np.zeros(150), np.ones(150)], -np.r_[solidity_b, solidity_m])
    assert 0.38 < auc < 0.62


def test_grid_cli_writes_png(tmp_path: Path) -> None:
    real_like = generate_dataset(tmp_path / "real_like", n_images=6, image_size=96, progress=False)
    out = tmp_path / "grid.png"
    grid.main(
        [
            "--out",
            str(out),
            "--synthetic-root",
            str(tmp_path / "syn"),
            "--n",
            "2",
            "--real",
            str(real_like),
        ]
    )
    with Image.open(out) as picture:
        width, height = picture.size
    assert height == pytest.approx(2 * width, rel=0.05)  # 4 rows (2 synthetic, 2 real) x 2
    assert (tmp_path / "syn" / MANIFEST).is_file()
