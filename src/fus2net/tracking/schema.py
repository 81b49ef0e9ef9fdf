"""The MLflow run layout of fus2net, in one place: what every tag, artifact and metric is called.

A job logs one cell run per configuration (`ROLE=cell`, found by `CELL_KEY`) and one child run
per fold (`ROLE=fold`, `FOLD`, parented by MLflow's own `PARENT` tag); `fus2net-compare` logs
`ROLE=comparison` runs. Each run lists the image sets it used as MLflow dataset inputs
(`ImageSet`), and each fold model and cell ensemble is an MLflow logged model (`ModelRole`).
Every other module asks this one for names, and reads runs back through `CellRun` / `FoldRun`
and `fold_runs_of`, so that the layout can change in one file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from fus2net.evaluation.metrics import METRICS
from fus2net.tracking.uris import redact_uri

if TYPE_CHECKING:
    from mlflow.entities import Run

# --- Tags that MLflow itself defines and reads ---------------------------------------------------
PARENT = "mlflow.parentRunId"
GIT_COMMIT = "mlflow.source.git.commit"
GIT_BRANCH = "mlflow.source.git.branch"
GIT_REPO_URL = "mlflow.source.git.repoURL"
# The experiment tag the UI's own experiment-type selector writes. MLflow 3.17's UI reads it only
# with its workflow-type switch off; with the switch (the default) the view comes from the
# `workflowType` URL parameter (tracking.uris.runs_table_link).
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"  # the UI's "Machine learning" type
DATASET_CONTEXT = "mlflow.data.context"  # input tag: what a run used a dataset for
DESCRIPTION = "mlflow.note.content"  # a run's description (Markdown), atop its Overview page


class Role(StrEnum):
    """What a run of the experiment is (the `ROLE` tag)."""

    CELL = "cell"
    FOLD = "fold"
    COMPARISON = "comparison"
    LOSO = "loso"  # a leave-one-source-out protocol: every held-out source and the mean


# --- fus2net's tags ------------------------------------------------------------------------------
ROLE = "fus2net.role"
CELL_KEY = "fus2net.cell_key"
FOLD = "fus2net.fold"  # 0-based fold index of a fold run (cv.fold); names say "fold k/n"
LOSO_KEY = "fus2net.loso_key"  # the protocol a held-out cell belongs to (cv.holdout_source)
HOLDOUT_SOURCE = "fus2net.holdout_source"  # the member a cell held out
LOSO_CELLS = "fus2net.loso_cells"  # a protocol run's cells: `<member>:<run id>`, space-separated
FOLDS_RUN = "fus2net.folds_run"  # comma-separated folds a cell was trained with
ERROR = "fus2net.error"
# On a finished cell whose scoring again (new evaluation-only settings) failed or was stopped:
# why. The cell stays FINISHED with its earlier scores; the next job asking scores it again.
RESCORE_ERROR = "fus2net.rescore_error"
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
SWEPT = "fus2net.swept"  # the keys the sweep varies, space-separated (names its cells)
NO_SWEEP = "none"
# Comparison runs (reporting.compare).
COMPARED_RUNS = "fus2net.compared_runs"
REFERENCE = "fus2net.reference"
FILTER = "fus2net.filter"

# Logged models and registered versions.
MEMBERS = "fus2net.members"  # an ensemble's fold models (logged model ids, space-separated)

MAX_TAG_VALUE = 5000  # PostgreSQL stores at most 8000 characters of a tag value
MAX_RUN_NAME = 250  # ... and 250 of a run name
NAME_SEPARATOR = " · "
KEY_IN_NAME = 6  # characters of the cell key that make a cell name unique


def fold_label(fold: int, n_folds: int) -> str:
    """How users see fold `fold` (0-based, as `cv.fold` and the `FOLD` tag): `fold 1/5`."""
    return f"fold {fold + 1}/{n_folds}"


def cell_run_name(choices: Sequence[str], key: str, keep_longest: Iterable[str] = ()) -> str:
    """`optimizer=sgd data.channels=1 · 3fa2c1`: what varies (`key=value` items), then the cell
    key's start, short enough that a fold's name (`fold_run_name`) still fits the store.

    Items are kept whole: those in `keep_longest` (a config group's choice) go last, the others
    longest value first, and `… +2` says how many went."""
    suffix = f"{NAME_SEPARATOR}{key[:KEY_IN_NAME]}"
    room = MAX_RUN_NAME - len(suffix) - len(f"{NAME_SEPARATOR}fold 100/100")
    kept, important = list(range(len(choices))), set(keep_longest)

    def text() -> str:
        shown = " ".join(choices[i] for i in kept)
        left = len(choices) - len(kept)
        return f"{shown} … +{left}".lstrip() if left else shown

    def least_informative(i: int) -> tuple[bool, int, int, int]:
        item = choices[i]
        return item not in important, len(item.partition("=")[2]), len(item), i

    while kept and len(text()) > room:
        kept.remove(max(kept, key=least_informative))
    return text() + suffix


def fold_run_name(cell_name: str, fold: int, n_folds: int) -> str:
    """`<cell name> · fold k/n`, so that chart legends across cells say which cell and fold."""
    return f"{cell_name}{NAME_SEPARATOR}{fold_label(fold, n_folds)}"


def external_error(name: str) -> str:
    """The tag with the reason external dataset `name` could not be scored."""
    return f"fus2net.external.{name}.error"


_UNSAFE_KEY_CHARACTERS = re.compile(r"[^/\w.\- :]")


def tag_key(key: str) -> str:
    """`key` as a tag key MLflow accepts: it takes letters, digits, `_ - . : /` and spaces,
    and no name that resolves as a path to another (`a//b`, `../a`, `/a`). A Hydra override
    such as `+dataset@eval_datasets.busbra=busbra` names a key with `@`: it becomes `_`, and
    the raw override stays in the `overrides` tag's value."""
    safe = _UNSAFE_KEY_CHARACTERS.sub("_", key)
    safe = re.sub(r"/+", "/", safe).strip("/")
    parts = [p if p not in (".", "..") else p.replace(".", "_") for p in safe.split("/")]
    return "/".join(parts) or "_"


def tag_value(value: object) -> str:
    """`value` as a tag value the store accepts: credentials hidden (whatever the tag: an error
    reason or a config value may hold a URI), then long reasons cut."""
    return redact_uri(str(value))[:MAX_TAG_VALUE]


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


def external_dir(name: str) -> str:
    return f"external/{name}"


# --- Metric names --------------------------------------------------------------------------------
CV, TEST, OOF = "cv", "test", "oof"  # cell metric prefixes: fold mean/sd, test set, pooled OOF
BY_SOURCE = "by_source"  # a pooled dataset's members: by_source/<member>/{test,oof}/<metric>
# The member a leave-one-source-out cell held out (cv.holdout_source), scored as external: its
# external/<member>/<metric> again under one name for every source, heldout/<metric>.
HELDOUT = "heldout"


def by_source(source: str, prefix: str) -> str:
    """The metric prefix of one member of a pooled dataset, e.g. `by_source/breast/test`."""
    return f"{BY_SOURCE}/{source}/{prefix}"


FOLDS_COMPLETED = "cv/folds_completed"
VAL_ECE = "calibration/val_ece"  # a fold run's validation ECE
# A fold run's per-epoch metrics (step = epoch): `<quantity>/<stage>` (`auc/val`), because
# MLflow's run page puts the charts of one name before its last `/` in one section: a
# quantity's train and validation curves sit side by side, overfitting in view. The loss is
# split in what the overfitting check compares (`loss/*`, the cross-entropy) and what the
# optimiser minimises (`objective/*`). The learning rate has no `/`: it fills the section the
# page shows for such names ("Model metrics"), which would otherwise show empty.
TRAIN_STAGE, VAL_STAGE = "train", "val"
TRAIN_LOSS = "loss/train"  # cross-entropy, comparable with VAL_LOSS
VAL_LOSS = "loss/val"
L2_PENALTY = "objective/l2_penalty"  # regularization.l2 * sum(w^2) of the first dense kernel
TOTAL_LOSS = "objective/total"  # TRAIN_LOSS + L2_PENALTY: what the optimiser minimises
LEARNING_RATE = "lr"  # at the start of each epoch
EPOCH_SECONDS = "perf/train_epoch_seconds"
IMAGES_PER_S = "perf/train_images_per_s"
SYSTEM_PREFIX = "system/"  # MLflow's system metrics (fold runs)


def epoch_metric(stage: str, name: str) -> str:
    """A per-epoch metric of a fold run, e.g. `auc/val`."""
    return f"{name}/{stage}"


# The names stores written before the rename hold (`<stage>/<quantity>`): current -> old.
LEGACY_EPOCH_METRICS: dict[str, str] = {
    **{
        epoch_metric(stage, name): f"{stage}/{name}"
        for stage in (TRAIN_STAGE, VAL_STAGE)
        for name in (*METRICS, "loss")
    },
    L2_PENALTY: "train/l2_penalty",
    TOTAL_LOSS: "train/total_loss",
    LEARNING_RATE: "train/lr",
}


def uses_legacy_epoch_names(logged: Iterable[str]) -> bool:
    """Whether a fold run with metrics `logged` has its per-epoch ones under the old names
    (a store written before the rename), so that a resumed fold goes on under them."""
    old = set(LEGACY_EPOCH_METRICS.values())
    return any(name in old for name in logged)


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
SOURCE_COLUMN = "source"  # the member dataset of a pooled dataset


# --- Dataset inputs (MLflow's Datasets panel) ----------------------------------------------------
class Context(StrEnum):
    """What a run used an image set for (MLflow's `mlflow.data.context` input tag)."""

    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"
    EXTERNAL = "external"


DIGEST_FINGERPRINT = 16  # characters of the dataset fingerprint that start a digest


@dataclass(frozen=True)
class ImageSet:
    """One set of images a run used: an MLflow dataset input (name, digest, source, counts).

    The digest is the dataset fingerprint's start and a hash of the images in the set, so each
    fold's training set is its own dataset and the test set is the same one in every run.
    """

    name: str  # `<dataset>/<context>`, or `external/<name>`
    digest: str
    source: str  # the dataset's root folder (or manifest)
    context: Context
    per_class: dict[str, int]

    @property
    def profile(self) -> str:
        """MLflow's dataset profile: image counts, in total and per class."""
        return json.dumps({"images": sum(self.per_class.values()), "per_class": self.per_class})


def image_set(
    dataset: str,
    fingerprint: str,
    context: Context,
    keys: Sequence[str],
    labels: Sequence[int],
    class_names: Sequence[str],
    source: str,
    name: str | None = None,
) -> ImageSet:
    """The `ImageSet` of the images `keys` (paths relative to the dataset, with `labels`)."""
    content = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:8]
    counts = {c: 0 for c in class_names}
    for label in labels:
        counts[class_names[int(label)]] += 1
    return ImageSet(
        name=name or f"{dataset}/{context.value}",
        digest=f"{fingerprint[:DIGEST_FINGERPRINT]}-{content}",
        source=source,
        context=context,
        per_class=counts,
    )


def external_set_name(name: str) -> str:
    return f"external/{name}"


# --- Logged models (MLflow's Models tab) ---------------------------------------------------------
class ModelRole(StrEnum):
    """What a logged model is (its `ROLE` tag)."""

    FOLD = "fold"  # one fold's model, logged by its fold run
    ENSEMBLE = "ensemble"  # the cell's ensemble of its fold models, logged by the cell run


# What MLflow refuses in a logged model's name (`_validate_logged_model_name`): `.` becomes `_`
# (`data.channels` -> `data_channels`), the others `-`.
_MODEL_NAME_REFUSED = str.maketrans({".": "_", "/": "-", ":": "-", "%": "-", '"': "-", "'": "-"})


def model_name(cell_name: str, fold: int | None = None, n_folds: int = 0) -> str:
    """The Models tab's name of a cell's ensemble or fold model: the cell's run name, then
    what it is (`optimizer=sgd data_channels=1 · 3fa2c1 · fold 1 of 5`, `... · ensemble`);
    unique as the cell name is (its key's start), in the characters MLflow accepts."""
    what = "ensemble" if fold is None else f"fold {fold + 1} of {n_folds}"
    return f"{cell_name}{NAME_SEPARATOR}{what}".translate(_MODEL_NAME_REFUSED)


def model_filter(role: ModelRole, run_id: str | None = None, **tags: str) -> str:
    """A logged-model search filter: models of `role` logged by run `run_id`, with `tags`."""
    parts = [f"tags.`{ROLE}` = '{role.value}'"]
    if run_id:
        parts.append(f"source_run_id = '{run_id}'")
    parts += [f"tags.`{key}` = '{value}'" for key, value in tags.items()]
    return " AND ".join(parts)


MODEL_TYPE = "fus2net"  # MLflow's model_type of every logged model of the project


def version_tags(
    test: Mapping[str, float],
    intervals: Mapping[str, tuple[float, float]],
    provenance: Mapping[str, str],
) -> dict[str, str]:
    """A registered version's tags: test metrics with their 95 % CIs, and provenance."""
    tags = dict(provenance)
    for name, value in test.items():
        tags[f"{TEST}_{name}"] = f"{value:.4f}"
        if name in intervals:
            low, high = intervals[name]
            tags[f"{TEST}_{name}_ci95"] = f"[{low:.4f}, {high:.4f}]"
    return tags


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
