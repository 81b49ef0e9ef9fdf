"""Evaluation-only settings: a finished cell asked for more of them is scored, not trained, again.

External sets, Grad-CAM, the ECE's bins, the operating point's target and the bootstrap are read
only after every fold is trained, so they leave the cell key (`provenance.EVALUATION_ONLY_KEYS`).
A re-run that asks a finished cell for more of them scores it again from the models its runs
hold and logs the new scores to the same cell run; a cell keyed by an earlier version (those
settings hashed) is found by the same command and keeps its key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fus2net.config.factories import resolved_container
from fus2net.tracking import schema
from fus2net.tracking.provenance import (
    KEY_ALIAS_TAG,
    KEYED_AT_FORMER_VALUE,
    KEYED_ONLY_WHEN_SET,
    SCORED_WITH_TAG,
    _is_result_key,
    cell_key,
    evaluation_asked,
    evaluation_settings,
    flatten,
    is_evaluation_only,
    legacy_cell_key,
)
from jobs import compose_train, run_train, sqlite_client, tiny

# At 64 px (Fus2Net's smallest input is 51 px), Grad-CAM off: the job a re-run adds to.
TINY = tiny("dataset.image_size=96", "data.image_size=64", "evaluation.gradcam.enabled=false")
EXTERNAL = (
    "+dataset@eval_datasets.ext=synthetic",
    "eval_datasets.ext.n_images=12",
    "eval_datasets.ext.seed=5",
    "eval_datasets.ext.root=${paths.data_dir}/synthetic_ext",
)
GRADCAM = ("evaluation.gradcam.enabled=true", "evaluation.gradcam.n_images=4")
RESCORED = "scoring it again from its stored models"


def former_key(cfg, fingerprint: str) -> str:
    """The cell key as versions before evaluation-only keys left it computed it."""
    flat = flatten(resolved_container(cfg))
    flat["dataset.fingerprint"] = fingerprint
    kept = {k: v for k, v in flat.items() if _is_result_key(k) or is_evaluation_only(k)}
    kept["trainer.compile"] = False
    for key, former in KEYED_ONLY_WHEN_SET.items():
        if kept.get(key, former) == former:
            kept.pop(key, None)
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_evaluation_only_settings_leave_the_cell_key() -> None:
    base = cell_key(resolved_container(compose_train()), "f")
    for overrides in (
        EXTERNAL,
        ("evaluation.gradcam.n_images=8", "evaluation.gradcam.layer=block1"),
        ("evaluation.gradcam.enabled=false", "evaluation.enabled=false"),
        ("evaluation.calibration_bins=10", "evaluation.target_sensitivity=0.9"),
        ("evaluation.bootstrap=200", "evaluation.register_model=true"),
    ):
        assert cell_key(resolved_container(compose_train(*overrides)), "f") == base, overrides
    for keyed in (  # what a cell's models are, or what its scores mean
        "evaluation.tta=hflip",
        "evaluation.calibration=temperature",
        "evaluation.adabn=true",
        "evaluation.external_overlap=keep",
    ):
        assert cell_key(resolved_container(compose_train(keyed)), "f") != base, keyed


def test_cells_keyed_while_evaluation_settings_were_keyed_keep_their_keys() -> None:
    """At their defaults the evaluation-only keys hash as they did; a cell keyed at other values
    (an external set) is found by its former key, which `legacy_cell_key` gives."""
    plain = compose_train("experiment=improved")
    values = resolved_container(plain)
    assert cell_key(values, "data") == former_key(plain, "data") == legacy_cell_key(values, "data")
    external = compose_train("experiment=improved", *EXTERNAL, "evaluation.gradcam.n_images=8")
    ext_values = resolved_container(external)
    assert legacy_cell_key(ext_values, "data") == former_key(external, "data")
    assert cell_key(ext_values, "data") == cell_key(values, "data") != former_key(external, "data")
    assert {"trainer.compile", "evaluation.gradcam.n_images"} <= set(KEYED_AT_FORMER_VALUE)


def test_a_re_run_asks_only_for_what_the_cell_was_not_scored_with() -> None:
    scored = evaluation_settings(flatten(resolved_container(compose_train(*EXTERNAL))))
    assert set(scored) >= {"eval_datasets.ext", "evaluation.gradcam.n_images"}
    assert not any(k.startswith("eval_datasets.ext.") for k in scored)  # one digest per set

    def asked(*overrides: str) -> dict[str, str]:
        now = evaluation_settings(flatten(resolved_container(compose_train(*overrides))))
        return evaluation_asked(now, scored)

    assert asked(*EXTERNAL) == {}
    assert asked() == {}  # a set left out asks nothing: its scores stay on the cell
    assert set(asked(*EXTERNAL, "eval_datasets.ext.seed=6")) == {"eval_datasets.ext"}
    assert set(asked("evaluation.gradcam.n_images=8")) == {"evaluation.gradcam.n_images"}
    assert asked("evaluation.gradcam.enabled=false", "evaluation.gradcam.n_images=8") == {}
    assert asked("evaluation.enabled=false", "evaluation.calibration_bins=10") == {}
    # a cell scored before the tag existed: its params, as logged (values as strings)
    params = {k: str(v) for k, v in flatten(resolved_container(compose_train(*EXTERNAL))).items()}
    assert evaluation_settings(params) == scored


def cell_and_folds(root: Path):
    client = sqlite_client(root)
    experiment = client.get_experiment_by_name("fus2net")
    runs = client.search_runs([experiment.experiment_id])
    cells = [r for r in runs if r.data.tags.get(schema.ROLE) == "cell"]
    folds = {r.info.run_id for r in runs if r.data.tags.get(schema.ROLE) == "fold"}
    assert len(cells) == 1, [r.info.run_name for r in cells]
    return client, cells[0], folds


def test_an_external_set_added_to_a_finished_cell_is_scored_without_training(
    tmp_path: Path,
) -> None:
    run_train(TINY, tmp_path)
    client, cell, folds = cell_and_folds(tmp_path)
    assert len(folds) == 2 and "localization/n_images" not in cell.data.metrics

    again = run_train([*TINY, *EXTERNAL, *GRADCAM], tmp_path)  # train; add eval_datasets.ext
    said = again.stdout + again.stderr
    assert "nothing to train" in said and RESCORED in said, said
    _, rescored, folds_now = cell_and_folds(tmp_path)
    assert folds_now == folds  # no new fold run
    assert rescored.info.run_id == cell.info.run_id and rescored.info.status == "FINISHED"
    assert rescored.data.tags[schema.CELL_KEY] == cell.data.tags[schema.CELL_KEY]
    metrics = rescored.data.metrics
    assert 0 <= metrics["external/ext/auc"] <= 1 and metrics["external/ext/n_images"] == 12
    assert metrics["localization/n_images"] == 4
    assert {"external/ext/roc.png", "external/ext/predictions.csv"} <= {
        a.path for a in client.list_artifacts(cell.info.run_id, "external/ext")
    }
    scored_with = json.loads(rescored.data.tags[SCORED_WITH_TAG])
    assert "eval_datasets.ext" in scored_with
    assert scored_with["evaluation.gradcam.n_images"] == "4"
    assert rescored.data.params["evaluation.gradcam.enabled"] == "False"  # params never change

    same = run_train([*TINY, *EXTERNAL, *GRADCAM], tmp_path)  # nothing new asked: no work
    said = same.stdout + same.stderr
    assert "nothing to train" in said and RESCORED not in said, said
    _, unchanged, folds_now = cell_and_folds(tmp_path)
    assert folds_now == folds
    assert unchanged.data.tags[schema.ATTEMPTS] == rescored.data.tags[schema.ATTEMPTS]


def test_a_cell_keyed_by_an_earlier_version_is_found_and_keeps_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [*TINY, *EXTERNAL]
    run_train(args, tmp_path)
    client, cell, folds = cell_and_folds(tmp_path)
    key = cell.data.tags[schema.CELL_KEY]
    # What an earlier version left: the external set in the key, no record of the scoring.
    monkeypatch.setenv("FUS2NET_HOME", str(tmp_path))  # paths resolve as in the job
    cfg = compose_train(*args)
    fingerprint = cell.data.tags[schema.DATASET_FINGERPRINT]
    assert cell_key(resolved_container(cfg), fingerprint) == key
    old = former_key(cfg, fingerprint)
    assert old != key
    for run_id in (cell.info.run_id, *folds):
        client.set_tag(run_id, schema.CELL_KEY, old)
    client.delete_tag(cell.info.run_id, SCORED_WITH_TAG)

    again = run_train(args, tmp_path)  # the same command finds it
    said = again.stdout + again.stderr
    assert "nothing to train" in said and RESCORED not in said, said
    assert f"cell key {old}" in said
    _, found, folds_now = cell_and_folds(tmp_path)
    assert found.info.run_id == cell.info.run_id and folds_now == folds
    assert found.data.tags[schema.CELL_KEY] == old and found.data.tags[KEY_ALIAS_TAG] == key

    more = run_train([*args, *GRADCAM], tmp_path)  # other evaluation-only settings find it too
    said = more.stdout + more.stderr
    assert "nothing to train" in said and RESCORED in said, said
    _, rescored, folds_now = cell_and_folds(tmp_path)
    assert rescored.info.run_id == cell.info.run_id and folds_now == folds
    assert rescored.data.tags[schema.CELL_KEY] == old
    assert rescored.data.metrics["localization/n_images"] == 4


def test_a_refit_cell_is_scored_again_with_its_stored_refit_model(tmp_path: Path) -> None:
    args = [*TINY, "cv.test_scoring=refit"]
    first = run_train(args, tmp_path)
    assert "refit on all" in first.stdout + first.stderr
    again = run_train([*args, *GRADCAM], tmp_path)
    said = again.stdout + again.stderr
    assert RESCORED in said and "refit model read back" in said, said
    assert "refit on all" not in said  # not fitted again
    client, cell, folds = cell_and_folds(tmp_path)
    assert len(folds) == 2 and cell.data.metrics["localization/n_images"] == 4
    assert schema.REFIT_WEIGHTS in {
        a.path for a in client.list_artifacts(cell.info.run_id, schema.REFIT_DIR)
    }


def test_a_cell_without_stored_models_is_not_scored_again_nor_trained(tmp_path: Path) -> None:
    args = [*TINY, "tracking.log_checkpoints=false"]
    run_train(args, tmp_path)
    _, cell, folds = cell_and_folds(tmp_path)
    again = run_train([*args, *GRADCAM], tmp_path)
    said = again.stdout + again.stderr
    assert "nothing to train" in said and RESCORED not in said, said
    key = cell.data.tags[schema.CELL_KEY]
    assert f"cell {key} is not scored again for evaluation.gradcam.enabled=True" in said
    assert "tracking.log_checkpoints=false" in said and "Traceback" not in said
    _, same, folds_now = cell_and_folds(tmp_path)
    assert folds_now == folds and same.info.status == "FINISHED"
    assert "localization/n_images" not in same.data.metrics


def test_a_failed_scoring_again_leaves_the_cell_finished_and_the_next_job_scores_it(
    tmp_path: Path,
) -> None:
    run_train(TINY, tmp_path)
    _, cell, folds = cell_and_folds(tmp_path)
    bad = run_train(
        [*TINY, *GRADCAM, "evaluation.gradcam.layer=no_such_layer"], tmp_path, check=False
    )
    said = bad.stdout + bad.stderr
    assert bad.returncode != 0 and RESCORED in said, said
    _, failed, folds_now = cell_and_folds(tmp_path)
    assert folds_now == folds and failed.info.status == "FINISHED"  # its training stands
    assert "no_such_layer" in failed.data.tags[schema.RESCORE_ERROR]
    assert failed.data.metrics["cv/auc_mean"] == cell.data.metrics["cv/auc_mean"]

    good = run_train([*TINY, *GRADCAM], tmp_path)
    assert RESCORED in good.stdout + good.stderr
    _, rescored, folds_now = cell_and_folds(tmp_path)
    assert folds_now == folds and rescored.info.status == "FINISHED"
    assert schema.RESCORE_ERROR not in rescored.data.tags
    assert rescored.data.metrics["localization/n_images"] == 4
