"""A job at a glance (issue 25): run descriptions, readable logged-model names, the progress bar,
library logs kept to warnings in one format, and the closing block a job prints."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytorch_lightning as L
import torch
from omegaconf import open_dict

from fus2net.cell.summary import CellSummary, Closing, format_duration, format_summary
from fus2net.cli import terminal
from fus2net.experiment import cells
from fus2net.tracking import descriptions, schema
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.training.progress import (
    RichFoldProgressBar,
    TqdmFoldProgressBar,
    epoch_description,
)
from jobs import compose_train

RUN = "c8ff03eef4924861b7cba11bb6ad8bf0"


# --- 1. run descriptions ------------------------------------------------------------------------


def test_a_cell_description_gives_its_aucs_rounded_and_the_command_that_predicts() -> None:
    text = descriptions.cell_description(
        RUN,
        model="fus2net",
        dataset="busi",
        n_folds=5,
        test_scoring="ensemble",
        cv_auc=(0.80504, 0.03811),
        test_auc=0.87149,
        test_ci=(0.8012, 0.93333),
        n_test=130,
        external=descriptions.external_aucs(
            {"external/breast/auc": 0.7114, "external/breast/accuracy": 0.6, "test/auc": 0.8}
        ),
    )
    assert text.startswith("**fus2net** on **busi**, 5-fold cross-validation")
    assert "- CV AUC: 0.805 ± 0.038 (mean ± sd over 5 folds)" in text
    assert "- test AUC: 0.871 (95 % CI 0.801 to 0.933, bootstrap), 130 images" in text
    assert "- external `breast` AUC: 0.711" in text and "accuracy" not in text
    assert f"`fus2net-predict {RUN} IMAGES`" in text
    bare = descriptions.cell_description(
        RUN,
        model="m",
        dataset="d",
        n_folds=2,
        test_scoring="refit",
        cv_auc=(None, None),
        test_auc=float("nan"),
        predictable=False,  # no model spec (evaluation.enabled=false): nothing to predict with
    )
    assert "CV AUC: n/a ± n/a" in bare and "test AUC: n/a\n" not in bare and "CI" not in bare
    assert "fus2net-predict" not in bare and "scored by the refit" in bare


def test_a_fold_description_says_its_fold_and_validation_auc() -> None:
    text = descriptions.fold_description(
        RUN, "fold 2/5", model="fus2net", dataset="busi", val_auc=0.71094, n_val=24, test_auc=0.5
    )
    assert text.startswith("**fus2net** on **busi**, fold 2/5")
    assert "- validation AUC: 0.711 (24 images)" in text and "0.500" in text
    assert f"fus2net-predict {RUN} IMAGES" in text


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('glance') / 'mlflow.db'}"


def test_a_closed_cell_carries_its_description_from_what_its_run_holds(
    store: str, tmp_path: Path
) -> None:
    tracker = MlflowTracker(store, "glance")
    cell = tracker.start_run("cell", {schema.ROLE: "cell", schema.DATASET: "breast"})
    tracker.log_params(
        cell, {"model.name": "resnet18", "cv.folds": 3, "cv.test_scoring": "ensemble"}
    )
    tracker.log_metrics(cell, {"external/busbra/auc": 0.6543, "test/auc": 0.9})
    spec = tmp_path / "fus2net_model.json"
    spec.write_text("{}")
    tracker.log_artifacts(cell, [spec], schema.MODEL_DIR)
    summary = CellSummary(cell, "k", cv={"auc_mean": 0.8, "auc_std": 0.01}, test={"auc": 0.9})
    summary.test_auc_ci, summary.n_test = (0.85, 0.95), 40
    cells.close_finished(tracker, summary, [0, 1, 2])
    run = tracker.get_run(cell)
    assert run.info.status == "FINISHED"
    text = run.data.tags[schema.DESCRIPTION]
    assert text.startswith("**resnet18** on **breast**, 3-fold cross-validation")
    assert "test AUC: 0.900 (95 % CI 0.850 to 0.950, bootstrap), 40 images" in text
    assert "- external `busbra` AUC: 0.654" in text and f"fus2net-predict {cell} IMAGES" in text


# --- 2. logged-model names ----------------------------------------------------------------------


def test_logged_models_are_named_by_their_cell_in_characters_mlflow_accepts() -> None:
    from mlflow.utils.validation import _validate_logged_model_name

    cell = "optimizer=sgd data.channels=1 +dataset@eval_datasets.x=a/b:c%'\" · 3fa2c1"
    names = [schema.model_name(cell), *(schema.model_name(cell, f, 5) for f in range(5))]
    for name in names:
        _validate_logged_model_name(name)  # raises on a refused character
    assert names[0] == (
        "optimizer=sgd data_channels=1 +dataset@eval_datasets_x=a-b-c--- · 3fa2c1 · ensemble"
    )
    assert names[1].endswith(" · 3fa2c1 · fold 1 of 5")
    assert len(set(names)) == len(names)
    assert schema.model_name("optimizer=adam · 0a1b2c") != schema.model_name(
        "optimizer=adam · 9f8e7d"
    )  # two cells that chose the same: told apart by their key, as their runs are


# --- 3. library logs ------------------------------------------------------------------------------


@pytest.fixture
def loggers() -> Iterator[None]:
    """Put back what quiet_libraries changes in this process's logging."""
    names = [*terminal.LIBRARY_LEVELS, *terminal.OWN_HANDLERS]
    found = {name: logging.getLogger(name) for name in names}
    saved = {n: (lg.level, list(lg.handlers), lg.propagate) for n, lg in found.items()}
    yield
    logging.captureWarnings(False)
    for name, (level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


def test_library_chatter_is_kept_to_warnings_in_the_jobs_own_handlers(
    loggers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_CONFIGURE_LOGGING", raising=False)
    terminal.leave_logging_to_the_job()
    assert terminal.os.environ["MLFLOW_CONFIGURE_LOGGING"] == "false"
    mlflow_logger = logging.getLogger("mlflow")
    mlflow_logger.handlers[:] = [logging.StreamHandler()]  # as MLflow configures itself
    mlflow_logger.propagate = False
    terminal.quiet_libraries(verbose=["timm"])  # hydra.verbose=timm
    assert mlflow_logger.handlers == [] and mlflow_logger.propagate
    system = logging.getLogger("mlflow.system_metrics.system_metrics_monitor")
    assert not system.isEnabledFor(logging.INFO) and system.isEnabledFor(logging.WARNING)
    assert not logging.getLogger("matplotlib.font_manager").isEnabledFor(logging.INFO)
    assert not logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)
    no_cuda = logging.getLogger("torch.utils.cpp_extension")
    assert not no_cuda.isEnabledFor(logging.WARNING) and no_cuda.isEnabledFor(logging.ERROR)
    assert logging.getLogger("timm").level != logging.WARNING  # what the user asked to see
    terminal.quiet_libraries()
    assert logging.getLogger("timm").level == logging.WARNING


# --- 4. the progress bar --------------------------------------------------------------------------


def test_epochs_count_from_one_with_what_trains_in_front() -> None:
    assert epoch_description("fold 2/5", 9, 10) == "fold 2/5 · Epoch 10/10"
    assert epoch_description("", 0, 10) == "Epoch 1/10"
    assert epoch_description("refit", 3, -1) == "refit · Epoch 4"  # bounded by steps or time


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("loss/train", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("bar_class", [RichFoldProgressBar, TqdmFoldProgressBar])
def test_the_bar_names_the_fold_counts_epochs_from_one_and_hides_v_num(
    bar_class: type, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bar = bar_class("fold 1/2")
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), 2)
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[bar],
        logger=L.loggers.CSVLogger(tmp_path),  # a logger with a version: Lightning's v_num
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        log_every_n_steps=1,
    )
    trainer.fit(_Tiny(), data)
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert "fold 1/2 · Epoch 2/2" in text and "Epoch 1/1" not in text
    assert "v_num" not in text and "v_num" not in bar.get_metrics(trainer, trainer.lightning_module)


# --- 5. the job's end -----------------------------------------------------------------------------


def summary(**fields: object) -> CellSummary:
    return CellSummary(
        RUN,
        "9cc40731e95e6f2e",
        folds={
            0: {"val": {"accuracy": 0.5, "sensitivity": 1.0, "specificity": 0.25, "auc": 0.81}},
            1: {"val": {"accuracy": 0.75, "sensitivity": 0.5, "specificity": 0.875, "auc": 0.7}},
        },
        cv={"accuracy_mean": 0.805, "accuracy_std": 0.0381, "auc_mean": 0.755, "auc_std": 0.0778},
        test={
            "accuracy": 0.6,
            "sensitivity": 0.5,
            "specificity": 0.7,
            "precision": 0.4,
            "auc": 0.6,
        },
        ui_command="mlflow ui --backend-store-uri sqlite:////x/mlruns/mlflow.db",
        ui_link="http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning",
        n_folds=2,
        **fields,
    )


VALUE = re.compile(r"(?:\d\.\d{4}|n/a)(?: ± (?:\d\.\d{4}|n/a))?")


def test_the_table_aligns_mean_and_sd_under_each_metric() -> None:
    text = format_summary(summary())
    assert "0.8050 ± 0.0381" in text and "+-" not in text
    rows = {line.strip().split("  ")[0]: line for line in text.splitlines()}
    header = rows["accuracy"]
    columns = [m.start() for m in re.finditer(r"\S+", header)]
    for label in ("fold 1/2", "fold 2/2", "mean ± sd", "test"):
        line = rows[label]
        body = line.index(label) + len(label)
        starts = [body + m.start() for m in VALUE.finditer(line[body:])]
        assert starts == columns, (label, line)
    assert "n/a ± n/a" in rows["mean ± sd"]  # precision: logged by no fold here
    assert (
        "0.7550 ± 0.0778" in rows["mean ± sd"] and rows["mean ± sd"].rstrip() == rows["mean ± sd"]
    )


def test_the_closing_block_says_where_the_results_are_and_what_to_run_next() -> None:
    closing = Closing(
        output_dir=Path("/work/outputs/2026-12-06/21-33-19"),
        elapsed_s=372.4,
        model_card=Path("/work/outputs/2026-12-06/21-33-19/clinical/model_card.md"),
        predict=f"fus2net-predict {RUN} IMAGES",
        compare="fus2net-compare --sweep 21-41-03  (after the sweep)",
    )
    text = format_summary(summary(), closing)
    assert "Job done in 6 min 12 s: cell FINISHED" in text
    assert "output folder    /work/outputs/2026-12-06/21-33-19" in text
    assert "model card       /work/outputs/2026-12-06/21-33-19/clinical/model_card.md" in text
    assert f"predict  fus2net-predict {RUN} IMAGES" in text
    assert "compare  fus2net-compare --sweep 21-41-03" in text
    assert "browse   mlflow ui --backend-store-uri sqlite:////x/mlruns/mlflow.db" in text
    assert text.rstrip().endswith("runs?workflowType=machine_learning")
    scheduled = format_summary(
        summary(status="SCHEDULED", error="fold 2/2 (cv.fold=1) not finished yet"), Closing()
    )
    assert "Cell SCHEDULED (fold 2/2 (cv.fold=1) not finished yet)" in scheduled
    assert "predict" not in scheduled and "model card" not in scheduled
    assert [format_duration(s) for s in (4.4, 65, 7384)] == ["4 s", "1 min 05 s", "2 h 03 min"]


def test_a_sweep_job_ends_with_the_compare_command_of_its_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from fus2net.cli.train import closing

    monkeypatch.setenv("FUS2NET_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose_train(hydra_config=True)
    out = tmp_path / "outputs/multirun/2026-12-06/21-41-03/0"
    (out / "clinical").mkdir(parents=True)
    (out / "clinical" / "model_card.md").write_text("card")
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.sweep.dir = str(out.parent)
        cfg.paths.root = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    try:
        found = closing(cfg, summary(), 12.0)
        with open_dict(cfg):
            cfg.tracking.uri = "sqlite:////elsewhere/mlflow.db"
            cfg.tracking.experiment = "mine"
        elsewhere = closing(cfg, summary(status="FAILED"), 12.0)
    finally:
        HydraConfig.instance().cfg = None  # type: ignore[assignment]
    assert found.output_dir == out and found.model_card == out / "clinical" / "model_card.md"
    assert found.predict == f"fus2net-predict {RUN} IMAGES"
    assert found.compare.startswith("fus2net-compare --sweep 21-41-03  ")
    assert elsewhere.predict == ""  # a failed cell has no model to predict with
    assert elsewhere.compare.startswith(
        "fus2net-compare --sweep 21-41-03 --tracking-uri sqlite:////elsewhere/mlflow.db "
        "--experiment mine"
    )
