"""A cell run's name says what the job chose, readably and without local paths: Hydra's
`+group@package=choice` overrides by where they go, places on disk left out, and under the
length cap whole `key=value` items, the group choices kept longest."""

from __future__ import annotations

from pathlib import Path

import pytest

from fus2net.experiment.cells import cell_name
from fus2net.tracking import schema
from fus2net.tracking.provenance import is_path_override, readable_key
from jobs import run_train, sqlite_client, tiny

KEY = "3fa2c1d4e5f60718"


def _tags(*overrides: str, groups: tuple[str, ...] = ()) -> dict[str, str]:
    """The tags `experiment.hydra_run.hydra_tags` writes for these command-line overrides."""
    tags = {schema.OVERRIDES: " ".join(overrides)}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        tags[schema.tag_key(f"{schema.OVERRIDE_PREFIX}{key}")] = value
    for group in groups:
        tags[schema.tag_key(f"{schema.CHOICE_PREFIX}{group}")] = "x"
    return tags


def test_a_group_placed_with_at_is_named_by_where_it_goes() -> None:
    assert readable_key("dataset@dataset.members.a") == "members.a"
    assert readable_key("dataset@eval_datasets.busbra") == "eval_datasets.busbra"
    assert readable_key("optimizer") == "optimizer"
    assert readable_key("model@_global_") == "model"
    tags = _tags(
        "dataset=pooled",
        "+dataset@dataset.members.a=busi",
        "+dataset@dataset.members.b=busbra",
        "dataset.members.a.root=/data/busi",
        groups=("dataset", "dataset@dataset.members.a", "dataset@dataset.members.b"),
    )
    assert cell_name(tags, KEY) == "dataset=pooled members.a=busi members.b=busbra · 3fa2c1"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("dataset.root", "busi"),  # by its key, whatever the value
        ("eval_datasets.x.csv", "labels"),
        ("model.checkpoint_path", "w"),
        ("dataset.image_dir", "images"),
        ("dataset.n_images", "/abs/place"),  # by its value, whatever the key
        ("data.x", "./here"),
        ("data.x", "../there"),
        ("data.x", "data/busi"),
        ("data.x", "~/data"),
        ("data.x", "${paths.data_dir}/ext"),
        ("data.x", "labels.csv"),
        ("data.x", "https://host/data"),
    ],
)
def test_an_override_naming_a_place_is_left_out(key: str, value: str) -> None:
    assert is_path_override(key, value)
    assert cell_name(_tags("cv.folds=2", f"{key}={value}"), KEY) == "cv.folds=2 · 3fa2c1"


@pytest.mark.parametrize(("key", "value"), [("optimizer", "sgd"), ("data.resize", "pad")])
def test_other_overrides_are_named(key: str, value: str) -> None:
    assert not is_path_override(key, value)


def test_a_sweep_over_a_member_names_it_readably() -> None:
    tags = _tags("+dataset@dataset.members.a=busi,busbra", "cv.folds=2")
    tags[schema.tag_key("override.dataset@dataset.members.a")] = "busbra"  # this job's choice
    tags[schema.SWEPT] = "dataset@dataset.members.a"
    assert cell_name(tags, KEY) == "members.a=busbra · 3fa2c1"


def test_the_cap_keeps_whole_items_and_the_group_choices_and_counts_the_rest() -> None:
    overrides = [f"data.opt{i}={'v' * (10 + i)}" for i in range(12)]
    overrides[3:3] = ["optimizer=sgd", "+dataset@dataset.members.a=busi"]
    tags = _tags(*overrides, groups=("optimizer", "dataset@dataset.members.a"))
    name = cell_name(tags, KEY)
    assert len(schema.fold_run_name(name, 99, 100)) <= schema.MAX_RUN_NAME
    shown, left = name.removesuffix(" · 3fa2c1").split(" … +")
    items = shown.split()
    readable = [o.replace("+dataset@dataset.", "") for o in overrides]
    assert "optimizer=sgd" in items and "members.a=busi" in items
    assert items == [item for item in readable if item in items]  # whole, in their order
    assert int(left) == len(overrides) - len(items) > 0
    assert "data.opt11=" not in name  # the longest value went first


def test_a_pooled_job_is_named_by_its_members_without_their_folders(tmp_path: Path) -> None:
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
        "evaluation.gradcam.enabled=false",
    ]
    run_train(tiny(*members, drop=["dataset.n_images", "dataset.image_size"]), tmp_path)
    client = sqlite_client(tmp_path)
    experiment = client.get_experiment_by_name("fus2net")
    runs = client.search_runs([experiment.experiment_id])
    (cell,) = [r for r in runs if r.data.tags.get(schema.ROLE) == "cell"]
    name = cell.info.run_name
    key = cell.data.tags[schema.CELL_KEY]
    assert " dataset=pooled members.one=synthetic members.two=synthetic " in name
    assert name.endswith(f" · {key[:6]}")
    assert str(tmp_path) not in name and "root=" not in name and "/" not in name
    assert "dataset_dataset" not in name
    # more overrides than fit: whole items were dropped, and the name says how many
    shown, _, left = name.removesuffix(f" · {key[:6]}").partition(" … +")
    assert left.isdigit() and int(left) > 0
    assert all("=" in item for item in shown.split())
    folds = [r for r in runs if r.data.tags.get(schema.ROLE) == "fold"]
    assert {r.info.run_name for r in folds} == {f"{name} · fold 1/2", f"{name} · fold 2/2"}
