"""The MLflow run layout of fus2net, in one place: what every tag, artifact and metric is called.

A job logs one cell run per configuration (`ROLE=cell`, found by `CELL_KEY`) and one child run
per fold (`ROLE=fold`, `FOLD`, parented by MLflow's own `PARENT` tag); `fus2net-compare` logs
`ROLE=comparison` runs. Every other module asks this one for names, and reads runs back through
`CellRun` / `FoldRun` and `fold_runs_of`, so that the layout can change in one file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from fus2net.evaluation.metrics import METRICS

if TYPE_CHECKING:
    from mlflow.entities import Run

# --- Tags that MLflow itself defines and reads ---------------------------------------------------
PARENT = "mlflow.parentRunId"
GIT_COMMIT = "mlflow.source.git.commit"
GIT_BRANCH = "mlflow.source.git.branch"
GIT_REPO_URL = "mlflow.source.git.repoURL"


class Role(StrEnum):
    """What a run of the experiment is (the `ROLE` tag)."""

    CELL = "cell"
    FOLD = "fold"
    COMPARISON = "comparison"


# --- fus2net's tags ------------------------------------------------------------------------------
ROLE = "fus2net.role"
CELL_KEY = "fus2net.cell_key"
FOLD = "fus2net.fold"  # 0-based fold index of a fold run
FOLDS_RUN = "fus2net.folds_run"  # comma-separated folds a cell was trained with
ERROR = "fus2net.error"
ATTEMPTS = "fus2net.attempts"
RESUMED_FROM = "fus2net.resumed_from"  # the status a reopened run had
RESUMED_FROM_EPOCH = "fus2net.resumed_from_epoch"
DATASET = "fus2net.dataset"
DATASET_FINGERPRINT = "fus2net.dataset_fingerprint"
REGISTERED_MODEL = "fus2net.registered_model"
GIT_DIRTY = "git.dirty"
# Owner of a RUNNING run, so another job can tell a live run from an orphan (tracking.resume).
HOST = "fus2net.host"
PID = "fus2net.pid"
PID_START = "fus2net.pid_start"
HEARTBEAT = "fus2net.heartbeat"
# Sweeps and Hydra (tracking.provenance).
SWEEP = "sweep"  # the sweep that last used a cell
SWEEPS = "fus2net.sweeps"  # every sweep that used it, space-separated
HYDRA_MODE = "hydra.mode"
HYDRA_OUTPUT_DIR = "hydra.output_dir"
OVERRIDES = "overrides"
OVERRIDE_PREFIX = "override."
CHOICE_PREFIX = "choice."
NO_SWEEP = "none"
# Comparison runs (reporting.compare).
COMPARED_RUNS = "fus2net.compared_runs"
REFERENCE = "fus2net.reference"
FILTER = "fus2net.filter"

MAX_TAG_VALUE = 5000  # PostgreSQL stores at most 8000 characters of a tag value
MAX_RUN_NAME = 250  # ... and 250 of a run name


def external_error(name: str) -> str:
    """The tag with the reason external dataset `name` could not be scored."""
    return f"fus2net.external.{name}.error"


def tag_value(value: object) -> str:
    """`value` as a tag value the store accepts (long reasons are cut)."""
    return str(value)[:MAX_TAG_VALUE]


def role_filter(role: Role, **tags: str) -> str:
    """An MLflow filter for runs of `role` with the given tag values (keys as in this module)."""
    parts = [f"tags.`{ROLE}` = '{role.value}'"]
    parts += [f"tags.`{key}` = '{value}'" for key, value in tags.items()]
    return " AND ".join(parts)


# --- Artifact paths ------------------------------------------------------------------------------
PREDICTIONS_FILE = "predictions.csv"
PROVENANCE_DIR = "provenance"
CHECKPOINT_DIR = "checkpoint"
FOLD_WEIGHTS = "checkpoint/model.pt"  # a fold run's weights
REFIT_DIR = "checkpoint/refit"
REFIT_WEIGHTS = "checkpoint/refit/model.pt"  # a refit-scored cell's weights
MODEL_DIR = "model"  # the cell's fus2net_model.json
CALIBRATION_DIR = "calibration"
LOCALIZATION_DIR = "localization"
REGISTERED_MODEL_DIR = "registered_model"


def external_dir(name: str) -> str:
    return f"external/{name}"


# --- Metric names --------------------------------------------------------------------------------
CV, TEST, OOF = "cv", "test", "oof"  # cell metric prefixes: fold mean/sd, test set, pooled OOF
FOLDS_COMPLETED = "cv/folds_completed"
VAL_ECE = "calibration/val_ece"  # a fold run's validation ECE


def fold_metric(split: str, name: str) -> str:
    """A fold run's metric `name` on `split` (val or test), e.g. `fold/val_auc`."""
    return f"fold/{split}_{name}"


def prefixed(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """`{"auc": 0.9}` -> `{"<prefix>/auc": 0.9}`."""
    return {f"{prefix}/{name}": value for name, value in metrics.items()}


def unprefixed(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics under `prefix/`, without it."""
    return {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(prefix + "/")}


# --- Prediction tables (predictions.csv of fold and cell runs) -----------------------------------
class Split(StrEnum):
    VAL = "val"  # a fold's validation images
    TEST = "test"  # the held-out test set
    OOF = "oof"  # a cell's pooled out-of-fold (validation) predictions


PREDICTION_COLUMNS = ("path", "label", "prob", "fold", "split")
GROUP_COLUMN = "group"  # patient id, where the source has one


# --- Typed views of runs -------------------------------------------------------------------------
@dataclass(frozen=True)
class FoldRun:
    """A fold run, read back."""

    run: Run

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def status(self) -> str:
        return self.run.info.status

    @property
    def fold(self) -> int:
        return int(self.run.data.tags[FOLD])

    @property
    def cell_id(self) -> str:
        return self.run.data.tags.get(PARENT, "")

    @property
    def error(self) -> str:
        return self.run.data.tags.get(ERROR, "")

    def metrics(self, split: str = "val") -> dict[str, float]:
        """The paper's metrics of this fold on `split`, as logged."""
        logged = self.run.data.metrics
        return {
            m: logged[fold_metric(split, m)] for m in METRICS if fold_metric(split, m) in logged
        }


@dataclass(frozen=True)
class CellRun:
    """A cell run, read back, with the validation metrics of its finished folds."""

    run: Run
    folds: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def name(self) -> str:
        return self.run.info.run_name or self.run_id

    @property
    def status(self) -> str:
        return self.run.info.status

    @property
    def params(self) -> dict[str, str]:
        return self.run.data.params

    @property
    def tags(self) -> dict[str, str]:
        return self.run.data.tags

    @property
    def metrics(self) -> dict[str, float]:
        return self.run.data.metrics

    @property
    def key(self) -> str:
        return self.tags.get(CELL_KEY, self.run_id)

    @property
    def error(self) -> str:
        return self.tags.get(ERROR, "")

    @property
    def n_folds(self) -> int:
        return int(self.params.get("cv.folds", 0) or 0)

    @property
    def folds_run(self) -> list[int]:
        return [int(f) for f in self.tags.get(FOLDS_RUN, "").split(",") if f]

    @property
    def sweeps(self) -> list[str]:
        """Every sweep that used this cell, the current one last."""
        seen = [*self.tags.get(SWEEPS, "").split(), self.tags.get(SWEEP, NO_SWEEP)]
        return list(dict.fromkeys(seen))


def is_role(run: Run, role: Role) -> bool:
    return run.data.tags.get(ROLE) == role.value


def oldest_first(runs: Iterable[Run]) -> list[Run]:
    """Runs by start time, then id: the order every reader breaks ties in."""
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def pick_attempt(runs: list[Run]) -> Run:
    """Of several runs of one fold, the one that counts: finished, else running, else newest."""
    for status in ("FINISHED", "RUNNING"):
        found = [r for r in runs if r.info.status == status]
        if found:
            return oldest_first(found)[-1]
    return oldest_first(runs)[-1]


def fold_runs_of(cell_id: str, runs: Iterable[Run]) -> dict[int, FoldRun]:
    """The run that counts for each fold of cell `cell_id`, among `runs` (fold index -> run).

    The one definition of "the fold runs of a cell": resuming, calibration, loading a model
    and comparing all read folds through it.
    """
    by_fold: dict[int, list[Run]] = {}
    for run in runs:
        tags = run.data.tags
        if is_role(run, Role.FOLD) and tags.get(PARENT) == cell_id and FOLD in tags:
            by_fold.setdefault(int(tags[FOLD]), []).append(run)
    return {fold: FoldRun(pick_attempt(found)) for fold, found in sorted(by_fold.items())}


def finished_folds(folds: Mapping[int, FoldRun]) -> dict[int, FoldRun]:
    return {f: r for f, r in folds.items() if r.status == "FINISHED"}
