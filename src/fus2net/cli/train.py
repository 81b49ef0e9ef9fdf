"""`fus2net-train`: the Hydra app. `fus2net-train -m optimizer=adam,rmsprop,sgd` is a sweep."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fus2net.cli import config_dir
from fus2net.cli.output_dirs import with_own_output_dir
from fus2net.cli.terminal import leave_logging_to_the_job, quiet_libraries

if TYPE_CHECKING:
    from fus2net.cell.summary import CellSummary, Closing

log = logging.getLogger("fus2net")


def main() -> None:
    """`fus2net-train`: refuse credentials on the command line, then run the Hydra app.

    Checked before Hydra starts: Hydra writes the command line into the job's `.hydra/`
    folder (config.yaml, overrides.yaml, hydra.yaml) before any of our code runs; that folder
    is claimed here too, so that no two jobs share it.
    """
    from fus2net.tracking.uris import credential_overrides, credentials_refused, redact_logs

    keys = credential_overrides(sys.argv[1:])
    if keys:
        print(f"fus2net-train: error: {credentials_refused(keys)}", file=sys.stderr)
        sys.exit(2)
    redact_logs()  # Hydra's Optuna sweeper logs its storage URL, maybe with a password
    leave_logging_to_the_job()  # one format: MLflow's loggers go through Hydra's handlers
    sys.argv[1:] = with_own_output_dir(sys.argv[1:])  # never a folder another job shares
    train()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def train(cfg: DictConfig) -> float | None:
    started = time.monotonic()
    quiet_libraries(HydraConfig.get().verbose)  # after Hydra configured this job's logging
    from fus2net.cell.summary import format_summary
    from fus2net.clinical.step import clinical_step
    from fus2net.config.preflight import ConfigError
    from fus2net.data.records import DataError
    from fus2net.experiment.interrupts import JobInterrupted
    from fus2net.experiment.job import run_job
    from fus2net.io.files import DiskFull
    from fus2net.tracking.uris import TrackingError, redact_logs

    redact_logs()  # again: a launcher's worker process (joblib, submitit) starts here
    # MLflow prints each run's URL, credentials of the tracking URI included, when a run on a
    # server ends; the job prints one redacted link to the UI instead.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # albumentations asks PyPI for a newer version when imported: a training job makes no such
    # call (behind a refusing proxy it printed a warning). An exported value wins.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        summary = run_job(cfg, clinical_step())
    except DiskFull as exc:
        logging.raiseExceptions = False  # a log file on the full disk must not add tracebacks
        log.error("%s", exc)
        sys.exit(2)
    except (ConfigError, DataError, TrackingError) as exc:
        log.error("%s", exc)
        sys.exit(2)
    except JobInterrupted as exc:
        log.error("%s: runs marked KILLED; the same command resumes the job", exc)
        sys.exit(exc.exit_code)
    print(format_summary(summary, closing(cfg, summary, time.monotonic() - started)), flush=True)
    if summary.status in ("FAILED", "KILLED"):
        log.error("cell %s %s: %s", summary.cell_key, summary.status, summary.error)
        if HydraConfig.get().mode != RunMode.MULTIRUN:  # in a sweep the other jobs go on
            sys.exit(1)
        return None
    auc = summary.cv.get("auc_mean", summary.test.get("auc"))
    return float(auc) if auc is not None else None


def closing(cfg: DictConfig, summary: CellSummary, elapsed_s: float) -> Closing:
    """The job's closing block: its output folder, the model card it wrote, the commands to
    predict with the cell and (in a sweep) to compare the sweep's cells, its duration."""
    from fus2net.cell.summary import Closing

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir).resolve()
    card = out / "clinical" / "model_card.md"
    store = _store_option(cfg)
    predict = ""
    if summary.status == "FINISHED" and cfg.evaluation.enabled:
        predict = f"fus2net-predict {summary.cell_run_id} IMAGES{store}"
    compare = ""
    if hc.mode == RunMode.MULTIRUN:
        sweep = cfg.tracking.sweep or Path(str(hc.sweep.dir)).name
        experiment = str(cfg.tracking.experiment)
        if experiment != "fus2net":
            store += f" --experiment {shlex.quote(experiment)}"
        compare = f"fus2net-compare --sweep {shlex.quote(str(sweep))}{store}  (after the sweep)"
    return Closing(out, elapsed_s, card if card.is_file() else None, predict, compare)


def _store_option(cfg: DictConfig) -> str:
    """` --tracking-uri <store>` where the job's store is not the one fus2net-predict and
    fus2net-compare open by default (credentials hidden), else nothing."""
    from fus2net.tracking.uris import (
        TrackingError,
        default_tracking_uri,
        normalize_tracking_uri,
        redact_uri,
    )

    uri = str(cfg.tracking.uri)
    try:
        same = normalize_tracking_uri(uri, create=False) == normalize_tracking_uri(
            default_tracking_uri(), create=False
        )
    except TrackingError:
        same = False
    return "" if same else f" --tracking-uri {shlex.quote(redact_uri(uri))}"


if __name__ == "__main__":
    main()
