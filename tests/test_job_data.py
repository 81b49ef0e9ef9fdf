"""A job's data pass: every image file is read once, and what the later steps need (content
hash, perceptual hash, resized pixels) comes from that one read."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fus2net.cell.job_data import prepare_data
from fus2net.data import cache as cache_module
from fus2net.data.cache import load_resized
from fus2net.data.splits import make_split, records_fingerprint
from jobs import compose_train, tiny


def _cfg(root: Path, cache_dir: Path):
    return compose_train(
        *tiny("dataset.n_images=24", "cv.folds=2"),
        f"paths.root={root}",
        f"paths.cache_dir={cache_dir}",
        f"dataset.root={root / 'data' / 'synthetic'}",
    )


def test_each_image_is_read_once_per_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare_data(_cfg(tmp_path, tmp_path / "warm"))  # generates the synthetic set first
    reads: Counter[str] = Counter()
    read_bytes, image_open = Path.read_bytes, Image.open

    def counted_read_bytes(self: Path) -> bytes:
        reads[str(self)] += 1
        return read_bytes(self)

    def counted_open(fp, *args, **kwargs):  # PIL.Image.open's own signature
        if isinstance(fp, str | Path):
            reads[str(fp)] += 1
        return image_open(fp, *args, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", counted_read_bytes)
    monkeypatch.setattr(Image, "open", counted_open)
    monkeypatch.setattr(cache_module, "_PROCESS_CACHE", type(cache_module._PROCESS_CACHE)())
    data = prepare_data(_cfg(tmp_path, tmp_path / "cold"))  # no split or image cache to reuse

    images = {str(r.image) for r in data.records}
    assert {p: n for p, n in reads.items() if p in images} == dict.fromkeys(images, 1)
    monkeypatch.undo()
    # ... and what that read computed is what separate passes compute.
    assert data.fingerprint == records_fingerprint(data.records)
    size, channels = data.cache.images.shape[1], data.cache.images.shape[3]
    expected = np.stack([load_resized(r.image, size, channels) for r in data.records])
    assert np.array_equal(np.asarray(data.cache.images), expected)
    again = make_split(
        data.records,
        folds=2,
        seed=int(_cfg(tmp_path, tmp_path / "x").seed),
        test_fraction=0.25,
        duplicate_distance=4,
    )
    assert again.duplicate_groups == data.split.duplicate_groups
    assert [f.tolist() for f in again.folds] == [f.tolist() for f in data.split.folds]


def test_each_external_set_is_listed_once_per_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `eval_datasets` entry is instantiated and listed once by the whole job (checked before
    training, listed as a cell input, scored after training), not once per step."""
    from fus2net.clinical.step import clinical_step
    from fus2net.data.sources import SyntheticSource
    from fus2net.experiment.job import run_job

    listed: Counter[str] = Counter()
    load = SyntheticSource.load

    def counted_load(self: SyntheticSource):
        listed[str(self.root)] += 1
        return load(self)

    monkeypatch.setattr(SyntheticSource, "load", counted_load)
    external = tmp_path / "data" / "external"
    cfg = compose_train(
        *tiny("dataset.n_images=24", "cv.folds=2", "data.image_size=64"),
        f"paths.root={tmp_path}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
        "+dataset@eval_datasets.ext=synthetic",
        "eval_datasets.ext.n_images=12",
        f"eval_datasets.ext.root={external}",
    )
    summary = run_job(cfg, clinical_step())
    assert summary.cell_run_id
    assert listed[str(external)] == 1
    (scored,) = (tmp_path / "outputs" / "adhoc" / "clinical" / "external").iterdir()
    assert scored.name == "ext" and (scored / "predictions.csv").is_file()
