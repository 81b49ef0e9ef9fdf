"""Launchers and search: joblib and SLURM presets compose, SQLite refuses parallel writers, and an
Optuna search runs through Hydra's Optuna sweeper into an RDB study."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig

from fus2net.config.preflight import ConfigError, check_config
from jobs import compose_train, run_train, sqlite_client, tiny, train_env

TINY = tiny("dataset.n_images=48", "data.image_size=64", "evaluation.enabled=false")


def needs_optuna_sweeper() -> None:
    """Hydra's Optuna sweeper comes with the README's install (requirements.lock); only a plain
    `pip install -e ".[test]"` lacks it (pyproject.toml, extra `sweeper`): skip there; in CI
    (CI set) a missing sweeper is a failure."""
    try:
        import hydra_plugins.hydra_optuna_sweeper  # noqa: F401
    except ImportError:
        reason = (
            "needs Hydra's Optuna sweeper: install with "
            "`pip install --no-deps -r requirements.lock` (README, Quickstart)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def test_parallel_preset_is_hydras_joblib_launcher() -> None:
    launcher = compose_train("hydra/launcher=parallel", hydra_config=True).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launcher.n_jobs == 2


def test_slurm_preset_composes_the_submitit_launcher() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_train("hydra/launcher=slurm", "hydra.launcher.partition=gpu", hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert launcher.max_num_timeout >= 1, "timed-out tasks are requeued and resume"
    assert launcher.submitit_folder.endswith(".submitit/%j")


def test_optuna_search_composes_with_an_rdb_study(tmp_path: Path) -> None:
    needs_optuna_sweeper()
    cfg = compose_train("hparams_search=optuna", f"paths.root={tmp_path}", hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("optuna_sweeper.OptunaSweeper")
    assert sweeper.direction == "maximize"
    assert sweeper.storage == f"sqlite:///{tmp_path}/optuna.db"
    assert sweeper.sampler.seed is None, "machines sharing a study draw different trials"
    assert set(sweeper.params) >= {"optimizer.lr", "regularization.dropout"}


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["hydra/launcher=parallel"], True),
        (["hydra/launcher=parallel", "hydra.launcher.n_jobs=1"], False),
        (
            ["hydra/launcher=parallel", "tracking=server", "tracking.uri=http://127.0.0.1:5000"],
            False,
        ),
        ([], False),
    ],
)
def test_sqlite_store_refuses_parallel_jobs(overrides: list[str], refused: bool) -> None:
    cfg = compose_train(*overrides, hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        if refused:
            with pytest.raises(ConfigError, match="not safe for parallel writers") as error:
                check_config(cfg)
            assert "tracking=server" in str(error.value)
        else:
            check_config(cfg)
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.filterwarnings("ignore:.*Distribution has been deprecated:FutureWarning")
@pytest.mark.slow
def test_optuna_search_runs_trials_into_a_shared_study(tmp_path: Path) -> None:
    needs_optuna_sweeper()
    import optuna

    env = train_env(tmp_path)
    env.pop("FUS2NET_OPTUNA_STORAGE", None)
    args = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *TINY]
    proc = run_train(args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = optuna.load_study(study_name="fus2net", storage=f"sqlite:///{tmp_path}/optuna.db")
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2
    client = sqlite_client(tmp_path)
    experiment = client.get_experiment_by_name("fus2net").experiment_id
    cells = client.search_runs([experiment], "tags.`fus2net.role` = 'cell'")
    assert sorted(c.data.metrics["cv/auc_mean"] for c in cells) == pytest.approx(
        sorted(t.value for t in trials)
    ), "each trial's objective is its cell's mean validation AUC"
    assert {c.data.tags["override.optimizer.lr"] for c in cells} == {
        str(t.params["optimizer.lr"]) for t in trials
    }
