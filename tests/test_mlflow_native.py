"""MLflow's own panels filled by one tiny job: names, experiment view, metrics, datasets, logged
models, system metrics and registered versions, and registering a finished cell again."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
from omegaconf import OmegaConf

from fus2net.config.hydra_run import swept_keys
from fus2net.experiment.cells import OpenCell, cell_name
from fus2net.experiment.folds import _legacy_names
from fus2net.tracking import schema
from fus2net.tracking.lightning_logger import MlflowRunLogger
from fus2net.tracking.uris import runs_table_link, ui_command
from jobs import run_train, sqlite_client, store_uri, tiny

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

# Two epochs, so that every per-epoch metric has steps 0 and 1; Grad-CAM left out (not tested
# here); a tiny external set, for its dataset input; system metrics sampled often enough to
# catch a fold that trains for a second or two.
ARGS = [
    *tiny("dataset.image_size=96", "data.image_size=64", "trainer.max_epochs=2"),
    "+dataset@eval_datasets.ext=synthetic",
    "eval_datasets.ext.n_images=12",
    "eval_datasets.ext.seed=5",
    "eval_datasets.ext.root=${paths.data_dir}/synthetic_ext",
    "evaluation.gradcam.enabled=false",
    "evaluation.register_model=true",
    "tracking.system_metrics_interval_s=0.2",
]
MODEL_NAME = "fus2net-synthetic"


KEY = "3fa2c1d4e5f60718"


def test_a_cell_is_named_by_what_its_sweep_varies_and_its_key() -> None:
    tags = {
        "override.optimizer": "sgd",
        "override.cv.folds": "2",
        "override.data.num_workers": "2",  # changes no result
        schema.SWEPT: "optimizer",
    }
    assert cell_name(tags, KEY) == "optimizer=sgd · 3fa2c1"
    del tags[schema.SWEPT]  # not a sweep: every override that changes results
    assert cell_name(tags, KEY) == "optimizer=sgd cv.folds=2 · 3fa2c1"
    assert cell_name({}, KEY) == "default · 3fa2c1"
    long = cell_name({f"override.key{i}": "x" * 40 for i in range(20)}, KEY)
    kept = long.split(" … ")[0].split(" ")
    assert all(item == f"key{i}={'x' * 40}" for i, item in enumerate(kept))  # whole items
    assert long.endswith(f" … +{20 - len(kept)} · 3fa2c1")  # and how many were left out
    assert len(schema.fold_run_name(long, 99, 100)) <= schema.MAX_RUN_NAME


def test_the_swept_keys_are_the_sweepers_params_and_the_sweeps_of_the_command_line(
    tmp_path: Path,
) -> None:
    task = [
        "optimizer=adam,sgd",
        "cv.folds=2",
        "data.channels=1,3",
        "+dataset@eval_datasets.x=busi",
    ]
    OmegaConf.save({"hydra": {"overrides": {"task": task}}}, tmp_path / "multirun.yaml")
    hc = OmegaConf.create(
        {
            "sweeper": {
                "params": {"regularization.l2": "tag(log, interval(1e-4, 1e-1))", "seed": 3}
            },
            "sweep": {"dir": str(tmp_path)},
        }
    )
    assert swept_keys(hc) == ["regularization.l2", "optimizer", "data.channels"]


def test_the_learning_rate_is_logged_at_its_epoch_under_one_name() -> None:
    logged: list[tuple[int, dict[str, float]]] = []
    tracker = SimpleNamespace(log_metrics=lambda run, metrics, step: logged.append((step, metrics)))
    logger = MlflowRunLogger(tracker, "run")  # type: ignore[arg-type]
    logger.log_metrics({"lr-SGD": 0.01}, step=40)  # LearningRateMonitor, as epoch 3 starts
    assert logged == []
    logger.log_metrics({"auc/val": 0.7, "epoch": 3}, step=44)
    logger.log_metrics({"loss/train": 0.5, "epoch": 3}, step=44)
    assert logged == [(3, {"lr": 0.01, "auc/val": 0.7}), (3, {"loss/train": 0.5})]


def test_one_quantitys_train_and_val_curves_share_a_section_of_the_run_page() -> None:
    """MLflow's run page puts the charts of one name before the last `/` in one section, and
    shows a "Model metrics" section for names without one: the learning rate fills it."""
    names = [schema.TRAIN_LOSS, schema.VAL_LOSS]
    names += [schema.epoch_metric(stage, "auc") for stage in (schema.TRAIN_STAGE, schema.VAL_STAGE)]
    assert names == ["loss/train", "loss/val", "auc/train", "auc/val"]
    assert "/" not in schema.LEARNING_RATE


def test_a_fold_run_of_a_store_written_before_the_rename_reads_and_resumes_under_its_names(
    tmp_path: Path,
) -> None:
    client = sqlite_client(tmp_path)
    experiment = client.create_experiment("old")
    run_id = client.create_run(experiment, tags={schema.ROLE: "fold", schema.FOLD: "0"}).info.run_id
    for epoch, (loss, auc) in enumerate([(0.7, 0.6), (0.5, 0.8)]):
        for key, value in {"train/loss": loss, "val/auc": auc, "train/lr": 1e-3}.items():
            client.log_metric(run_id, key, value, step=epoch)
    old = schema.FoldRun(client.get_run(run_id))
    legacy = schema.LEGACY_EPOCH_METRICS
    assert legacy[schema.TRAIN_LOSS] == "train/loss"
    assert legacy[schema.epoch_metric(schema.VAL_STAGE, "auc")] == "val/auc"
    assert legacy[schema.LEARNING_RATE] == "train/lr"
    assert history(client, old.run, legacy[schema.TRAIN_LOSS]) == {0: 0.7, 1: 0.5}
    assert schema.uses_legacy_epoch_names(old.run.data.metrics)
    # resumed, its fold goes on under the names it holds: one curve per quantity
    logged: list[tuple[int, dict[str, float]]] = []
    tracker = SimpleNamespace(log_metrics=lambda run, metrics, step: logged.append((step, metrics)))
    logger = MlflowRunLogger(tracker, run_id, legacy_names=True)  # type: ignore[arg-type]
    logger.log_metrics({"lr-Adam": 1e-3}, step=20)
    logger.log_metrics({"auc/val": 0.9, "loss/train": 0.4, "epoch": 2}, step=30)
    assert logged == [(2, {"train/lr": 1e-3, "val/auc": 0.9, "train/loss": 0.4})]
    # a run of the current layout reads under the current names
    new = client.create_run(experiment).info.run_id
    client.log_metric(new, schema.TRAIN_LOSS, 0.3, step=0)
    current = schema.FoldRun(client.get_run(new))
    assert set(current.run.data.metrics) == {"loss/train"}
    assert not schema.uses_legacy_epoch_names(current.run.data.metrics)
    # every fold of that cell goes on under them, a fresh cell's under the current ones
    assert _legacy_names(OpenCell("cell", {0: old}, finished=False, name="cell"))
    assert not _legacy_names(OpenCell("cell", {0: current}, finished=False, name="cell"))
    assert not _legacy_names(OpenCell("cell", {}, finished=False, name="cell"))


def test_the_ui_command_names_the_store_absolutely_and_the_link_opens_the_runs_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert ui_command("sqlite:///mlruns/mlflow.db").startswith(
        f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlruns/mlflow.db "
    )
    view = "runs?workflowType=machine_learning"
    assert runs_table_link("sqlite:///x.db", "3") == f"http://127.0.0.1:5000/#/experiments/3/{view}"
    assert (
        runs_table_link("https://u:pw@lab:5000/", "7") == f"https://lab:5000/#/experiments/7/{view}"
    )


@dataclass
class Job:
    root: Path
    output: str  # stdout and stderr of the first run
    client: MlflowClient
    experiment_id: str
    cell: Run
    folds: list[Run]  # by fold index


def read_runs(client: MlflowClient, experiment_id: str) -> tuple[Run, list[Run]]:
    runs = client.search_runs([experiment_id])
    (cell,) = [r for r in runs if r.data.tags[schema.ROLE] == schema.Role.CELL]
    folds = [r for r in runs if r.data.tags[schema.ROLE] == schema.Role.FOLD]
    return cell, sorted(folds, key=lambda r: int(r.data.tags[schema.FOLD]))


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    root = tmp_path_factory.mktemp("native")
    proc = run_train(ARGS, cwd=root, timeout=600)
    client = sqlite_client(root)
    experiment = client.get_experiment_by_name("fus2net")
    cell, folds = read_runs(client, experiment.experiment_id)
    return Job(root, proc.stdout + proc.stderr, client, experiment.experiment_id, cell, folds)


@pytest.fixture(scope="module")
def rerun(job: Job) -> subprocess.CompletedProcess[str]:
    """The same command again on the finished cell: nothing to train, a version to register."""
    return run_train(ARGS, cwd=job.root, timeout=600)


def history(client: MlflowClient, run: Run, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}


def test_the_experiment_opens_in_training_mode_and_the_job_prints_its_runs_table(
    job: Job, tmp_path: Path
) -> None:
    experiment = job.client.get_experiment(job.experiment_id)
    assert experiment.tags[schema.EXPERIMENT_KIND] == "custom_model_development"
    link = f"http://127.0.0.1:5000/#/experiments/{job.experiment_id}/runs"
    assert f"{link}?workflowType=machine_learning" in job.output
    # the printed command names the store by its absolute path: it works from any folder
    assert f"mlflow ui --backend-store-uri {store_uri(job.root)} " in job.output


def test_runs_are_named_by_their_cell_and_fold_k_of_n(job: Job) -> None:
    key = job.cell.data.tags[schema.CELL_KEY]
    name = job.cell.info.run_name
    assert name.endswith(f" · {key[:6]}") and "cv.folds=2" in name
    assert [f.info.run_name for f in job.folds] == [f"{name} · fold 1/2", f"{name} · fold 2/2"]
    assert [f.data.tags[schema.FOLD] for f in job.folds] == ["0", "1"]  # what code reads
    assert "fold 1/2: " in job.output and "fold 2/2: " in job.output  # the log lines
    assert "fold 1/2 " in job.output.split("Validation metrics per fold")[1]  # the table


def test_train_loss_is_the_cross_entropy_and_the_penalty_and_total_are_logged_apart(
    job: Job,
) -> None:
    for fold in job.folds:
        loss = history(job.client, fold, schema.TRAIN_LOSS)
        penalty = history(job.client, fold, schema.L2_PENALTY)
        total = history(job.client, fold, schema.TOTAL_LOSS)
        assert sorted(loss) == sorted(penalty) == sorted(total) == [0, 1]  # step = epoch
        for epoch in (0, 1):
            assert penalty[epoch] > 0  # regularization=l2_dropout, the default
            assert total[epoch] - loss[epoch] == pytest.approx(penalty[epoch], rel=1e-4)
        assert sorted(history(job.client, fold, schema.VAL_LOSS)) == [0, 1]
        assert history(job.client, fold, schema.LEARNING_RATE) == {0: 1e-3, 1: 1e-3}  # Adam
        assert all(
            isinstance(m.step, int)
            for m in job.client.get_metric_history(fold.info.run_id, "auc/val")
        )


def inputs(run: Run) -> dict[str, tuple[str, str, dict]]:
    """context -> (name, digest, profile) of a run's dataset inputs."""
    found = {}
    for item in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in item.tags}
        found[tags[schema.DATASET_CONTEXT]] = (
            item.dataset.name,
            item.dataset.digest,
            json.loads(item.dataset.profile),
        )
    return found


def test_every_run_lists_the_images_it_used_as_mlflow_datasets(job: Job) -> None:
    fingerprint = job.cell.data.tags[schema.DATASET_FINGERPRINT]
    tests = set()
    for fold in job.folds:
        used = inputs(fold)
        assert {k: v[0] for k, v in used.items()} == {
            "train": "synthetic/train",
            "validation": "synthetic/validation",
            "test": "synthetic/test",
        }
        assert all(digest.startswith(fingerprint[:16] + "-") for _, digest, _ in used.values())
        params = fold.data.params
        assert used["train"][2]["images"] == int(params["n_train"])
        assert used["validation"][2]["images"] == int(params["n_val"])
        assert set(used["test"][2]["per_class"]) == {"benign", "malignant"}
        tests.add(used["test"][1])
    cell = inputs(job.cell)
    assert set(cell) == {"train", "test", "external"}
    assert tests == {cell["test"][1]}  # one test set, in every run
    assert cell["train"][2]["images"] == sum(int(f.data.params["n_val"]) for f in job.folds)
    assert cell["external"][0] == "external/ext" and cell["external"][2]["images"] == 12
    assert inputs(job.folds[0])["train"][1] != inputs(job.folds[1])["train"][1]


def test_fold_models_and_the_ensemble_are_logged_models_of_their_runs(job: Job) -> None:
    models = job.client.search_logged_models([job.experiment_id])
    by_role: dict[str, list] = {}
    for model in models:
        by_role.setdefault(model.tags[schema.ROLE], []).append(model)
    folds = sorted(by_role["fold"], key=lambda m: int(m.tags[schema.FOLD]))
    (ensemble,) = by_role["ensemble"]
    assert len(models) == 3 and all(m.status == "READY" for m in models)
    assert [m.source_run_id for m in folds] == [f.info.run_id for f in job.folds]
    assert ensemble.source_run_id == job.cell.info.run_id
    assert ensemble.tags[schema.MEMBERS] == " ".join(m.model_id for m in folds)
    for model, run in zip(folds, job.folds, strict=True):
        assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
        assert "model.pt" in {
            a.path for a in job.client.list_logged_model_artifacts(model.model_id)
        }
        linked = {m.key: (m.value, m.dataset_name) for m in model.metrics}
        assert linked["fold/val_auc"] == (
            run.data.metrics["fold/val_auc"],
            "synthetic/validation",
        )
        assert linked["fold/test_auc"][1] == "synthetic/test"
    linked = {m.key: (m.value, m.dataset_name) for m in ensemble.metrics}
    assert linked["test/auc"] == (job.cell.data.metrics["test/auc"], "synthetic/test")
    assert job.cell.outputs.model_outputs[0].model_id == ensemble.model_id


def test_runs_describe_themselves_and_models_are_named_by_their_cell(job: Job) -> None:
    cell, metrics = job.cell.data.tags[schema.DESCRIPTION], job.cell.data.metrics
    assert f"CV AUC: {metrics['cv/auc_mean']:.3f} ± {metrics['cv/auc_std']:.3f}" in cell
    assert f"test AUC: {metrics['test/auc']:.3f} (95 % CI " in cell
    assert f"external `ext` AUC: {metrics['external/ext/auc']:.3f}" in cell
    assert f"`fus2net-predict {job.cell.info.run_id} IMAGES`" in cell
    for k, fold in enumerate(job.folds):
        note = fold.data.tags[schema.DESCRIPTION]
        assert f"fold {k + 1}/2" in note
        assert f"validation AUC: {fold.data.metrics['fold/val_auc']:.3f}" in note
    name = job.cell.info.run_name
    models = {m.name for m in job.client.search_logged_models([job.experiment_id])}
    assert models == {schema.model_name(name), *(schema.model_name(name, k, 2) for k in (0, 1))}
    assert f"{name.replace('.', '_')} · fold 1 of 2" in models


def test_the_job_ends_with_where_its_results_are_and_no_raw_library_lines(job: Job) -> None:
    end = job.output.split("Validation metrics per fold")[1]
    assert "Job done in " in end and ": cell FINISHED" in end
    assert "output folder" in end and "/clinical/model_card.md" in end
    assert f"predict  fus2net-predict {job.cell.info.run_id} IMAGES" in end
    assert " ± " in end and "+-" not in end
    assert "mlflow.system_metrics" not in job.output  # MLflow's INFO lines, 4 per fold
    assert "INFO mlflow" not in job.output and "Creating initial MLflow database" not in job.output


def test_fold_runs_record_system_metrics_while_training(job: Job) -> None:
    system = [[k for k in f.data.metrics if k.startswith(schema.SYSTEM_PREFIX)] for f in job.folds]
    assert any("system/cpu_utilization_percentage" in keys for keys in system), system
    assert not any(k.startswith(schema.SYSTEM_PREFIX) for k in job.cell.data.metrics)


def test_the_registered_version_says_what_it_is(job: Job) -> None:
    version = job.client.get_model_version(MODEL_NAME, "1")
    ensemble = job.client.search_logged_models(
        [job.experiment_id], filter_string=f"tags.`{schema.ROLE}` = 'ensemble'"
    )[0]
    cell = job.cell.data
    assert version.source == f"models:/{ensemble.model_id}"
    assert version.run_id == job.cell.info.run_id
    tags = version.tags
    auc = cell.metrics["test/auc"]
    assert tags["test_auc"] == f"{auc:.4f}"
    low, high = (float(v) for v in tags["test_auc_ci95"].strip("[]").split(","))
    assert 0 <= low <= auc <= high <= 1 and low < high
    assert tags[schema.DATASET] == "synthetic"
    assert tags[schema.DATASET_FINGERPRINT] == cell.tags[schema.DATASET_FINGERPRINT]
    assert tags[schema.GIT_COMMIT] == cell.tags[schema.GIT_COMMIT]
    text = version.description
    assert f"auc {auc:.3f} [{low:.3f}, {high:.3f}]" in text
    assert cell.tags[schema.DATASET_FINGERPRINT][:16] in text and "not a medical device" in text


def test_registering_a_finished_cell_adds_a_version_without_training(
    job: Job, rerun: subprocess.CompletedProcess[str]
) -> None:
    output = rerun.stdout + rerun.stderr
    assert "nothing to train" in output and "registered models:/fus2net-synthetic/2" in output
    cell, folds = read_runs(job.client, job.experiment_id)
    assert cell.info.run_id == job.cell.info.run_id and cell.info.status == "FINISHED"
    assert [f.info.run_id for f in folds] == [f.info.run_id for f in job.folds]  # none trained
    assert len(job.client.search_logged_models([job.experiment_id])) == 3
    first, second = (job.client.get_model_version(MODEL_NAME, v) for v in ("1", "2"))
    assert second.source == first.source and second.run_id == first.run_id
    assert second.tags["test_auc_ci95"] == first.tags["test_auc_ci95"]
    assert cell.data.tags[schema.REGISTERED_MODEL] == f"models:/{MODEL_NAME}/2"
