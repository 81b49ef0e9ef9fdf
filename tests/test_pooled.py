"""Several datasets as one (`dataset=pooled`): members keep their loaders, the member is a
stratum of the splits, a column of predictions.csv and a prefix of per-member metrics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from fus2net.data.records import DataError
from fus2net.data.sources import FolderSource, PooledSource
from fus2net.data.splits import make_split
from fus2net.reporting.dataset_summary import format_summary, summarize_dataset
from jobs import BUSI, REPO, run_train, sqlite_client, tiny


def _folder(root: Path, counts: dict[str, int], seed: int) -> FolderSource:
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (40, 40), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}{i}.png")
    return FolderSource(root, classes=["benign", "malignant"])


def test_members_are_tagged_and_their_groups_namespaced(tmp_path: Path) -> None:
    a = _folder(tmp_path / "a", {"benign": 6, "malignant": 3}, 0)
    b = FolderSource(tmp_path / "b", classes=["benign", "malignant"], group_regex=r"^(?P<group>\w)")
    _folder(tmp_path / "b", {"benign": 4, "malignant": 4}, 1)
    records = PooledSource({"site_a": a, "site_b": b}).load()
    assert Counter(r.source for r in records) == {"site_a": 9, "site_b": 8}
    assert {r.group for r in records if r.source == "site_b"} == {"site_b:b", "site_b:m"}
    assert all(r.group is None for r in records if r.source == "site_a")
    pool = PooledSource({"site_a": a, "site_b": b})
    text = format_summary(summarize_dataset(pool, records, duplicate_distance=None))
    assert (
        "Groups (patients): 2 for the 8 images with a patient id; the other 9 have none and are "
        "each their own group" in text
    )


def test_member_problems_are_all_named_and_classes_must_agree(tmp_path: Path) -> None:
    a = FolderSource(tmp_path / "missing_a", classes=["benign", "malignant"])
    b = FolderSource(tmp_path / "missing_b", classes=["benign", "malignant"])
    with pytest.raises(DataError) as info:
        PooledSource({"a": a, "b": b}).load()
    reasons = [p.reason for p in info.value.problems]
    assert any(r.startswith("[a]") for r in reasons) and any(r.startswith("[b]") for r in reasons)
    other = FolderSource(tmp_path, classes=["malignant", "benign"])
    with pytest.raises(ValueError, match=r"dataset\.members\.b has classes \['malignant'"):
        PooledSource({"a": a, "b": other})
    with pytest.raises(ValueError, match=r"dataset\.members is empty"):
        PooledSource({})


def test_every_member_is_in_every_fold_and_the_test_set(tmp_path: Path) -> None:
    """Stratified by (label, member): a small member is not left out of a fold by chance."""
    big = _folder(tmp_path / "big", {"benign": 60, "malignant": 30}, 0)
    small = _folder(tmp_path / "small", {"benign": 15, "malignant": 10}, 1)
    records = PooledSource({"big": big, "small": small}).load()
    split = make_split(records, folds=5, seed=3, test_fraction=0.2, dedupe=False)
    strata = Counter((r.label, r.source) for r in records)
    for indices in [split.test, *split.folds]:
        seen = Counter((records[i].label, records[i].source) for i in indices)
        assert set(seen) == set(strata), seen
    test = Counter((records[i].label, records[i].source) for i in split.test)
    assert test == {(0, "big"): 12, (1, "big"): 6, (0, "small"): 3, (1, "small"): 2}
    assert split.params["strata"] == "label x source"


def test_pooled_job_reports_each_member(tmp_path: Path) -> None:
    """Two synthetic sets pooled through the real entry point: predictions.csv has the member
    of each image, and the cell run has test and out-of-fold metrics per member."""
    members = [
        "dataset=pooled",
        "+dataset@dataset.members.one=synthetic",
        "+dataset@dataset.members.two=synthetic",
        "dataset.members.one.n_images=48",
        "dataset.members.two.n_images=40",
        "dataset.members.two.seed=7",
        f"dataset.members.one.root={tmp_path / 'one'}",
        f"dataset.members.two.root={tmp_path / 'two'}",
        "dataset.members.one.image_size=128",
        "dataset.members.two.image_size=128",
        "hydra.run.dir=out",
    ]
    run_train(tiny(*members, drop=["dataset.n_images", "dataset.image_size"]), tmp_path)
    preds = pd.read_csv(next((tmp_path / "out").rglob("report/predictions.csv")))
    assert set(preds["source"]) == {"one", "two"}
    assert set(preds.loc[preds.split == "test", "source"]) == {"one", "two"}
    client = sqlite_client(tmp_path)
    (cell,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        "tags.`fus2net.role` = 'cell'",
    )
    for member in ("one", "two"):
        for split in ("test", "oof"):
            assert f"by_source/{member}/{split}/auc" in cell.data.metrics
    assert cell.data.params["dataset.members.two.seed"] == "7"  # the cell key covers members


@pytest.mark.skipif(not BUSI.is_dir(), reason="needs ../shared/data beside the checkout")
def test_busi_and_brest_pool_with_cross_member_duplicates_found() -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["dataset=busi_breast"])
    records = instantiate(cfg.dataset).load()
    assert Counter(r.source for r in records) == {"busi": 647, "breast": 252}
