"""Every documented command resumes, whatever its overrides look like: a Hydra override that
names a key MLflow would refuse (`+dataset@eval_datasets.<name>=...`, README's own external
validation recipe) is logged under a safe tag key, its raw text kept in the `overrides` tag."""

from __future__ import annotations

from pathlib import Path

from fus2net.tracking import schema
from jobs import run_train, sqlite_client, tiny

EXTERNAL = "+dataset@eval_datasets.ext=synthetic"


def test_an_override_with_at_sign_runs_and_resumes(tmp_path: Path) -> None:
    args = tiny(
        EXTERNAL,
        f"eval_datasets.ext.root={tmp_path / 'external'}",  # another hospital's, say
        "eval_datasets.ext.n_images=24",
        "eval_datasets.ext.image_size=96",
        "eval_datasets.ext.seed=1",
        "evaluation.gradcam.enabled=false",
    )
    first = run_train(args, tmp_path)
    assert "Traceback" not in first.stdout + first.stderr
    client = sqlite_client(tmp_path)
    experiment = client.get_experiment_by_name("fus2net")
    runs = client.search_runs([experiment.experiment_id])
    cell = next(r for r in runs if r.data.tags.get(schema.ROLE) == "cell")
    tags = cell.data.tags
    assert tags["override.dataset_eval_datasets.ext"] == "synthetic"
    assert tags["choice.dataset_eval_datasets.ext"] == "synthetic"
    assert EXTERNAL in tags[schema.OVERRIDES]
    assert "external/ext/auc" in cell.data.metrics  # the external set was scored
    again = run_train(args, tmp_path)  # the same command: the finished cell, nothing trained
    assert "nothing to train" in again.stdout + again.stderr
    assert len(client.search_runs([experiment.experiment_id])) == len(runs)


def test_tag_keys_are_what_mlflow_accepts() -> None:
    from mlflow.utils.validation import _validate_tag_name

    for key in ("override.dataset@eval_datasets.busbra", "choice.a//b", "/x", "override.a b:c"):
        _validate_tag_name(schema.tag_key(key))  # raises on a key MLflow refuses
    assert schema.tag_key("override.data.image_size") == "override.data.image_size"
    assert schema.tag_key("override.dataset@eval_datasets.busbra") == (
        "override.dataset_eval_datasets.busbra"
    )
