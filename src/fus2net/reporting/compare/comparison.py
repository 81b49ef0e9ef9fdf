"""Compare the cells of a sweep: which variant is better, by how much, and is it real.

Rows are variants, named by the configuration that differs between cells (found here, not
typed in). For each: cross-validation mean +/- sd over folds, the held-out test set with
bootstrap intervals (exact binomial ones where the bootstrap degenerates), and, against a
reference row, paired tests on the same images: DeLong for AUC (test set and pooled out-of-fold
predictions) and McNemar for accuracy, each with Holm's adjustment over the comparisons. What
the variants share (dataset, test set, image size, epochs, folds, model) is read from the same
runs, so that a report says what was compared without its reader opening MLflow.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fus2net.evaluation.metrics import METRICS, binary_metrics, mean_std
from fus2net.evaluation.stats import (
    DelongResult,
    ExactInterval,
    McNemarResult,
    bootstrap_intervals,
    delong_test,
    exact_fallbacks,
    holm,
    mcnemar_test,
)
from fus2net.reporting.compare.runs import (
    CellRun,
    Skipped,
    SweepRuns,
    load_predictions,
    unreadable_cell,
)
from fus2net.tracking import schema
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.predictions import patient_groups
from fus2net.tracking.provenance import KEYED_ONLY_WHEN_SET, NON_RESULT_KEYS, flatten
from fus2net.tracking.uris import without_credentials

THRESHOLD = 0.5  # the operating point every logged metric uses
# Params that describe where or how fast, or restate the data; never a variant's name.
IGNORED_PARAMS = (*NON_RESULT_KEYS, "dataset.fingerprint", "trainer.threads", "trainer.devices")
CHOICE = schema.CHOICE_PREFIX
# Groups that bundle other choices: a cell found finished keeps the preset that first trained it,
# so `experiment` names a row only where no ordinary group or key tells the cells apart.
PRESET_GROUPS = ("experiment",)
NOT_LOGGED = "not logged"  # a fact a cell run does not record
# The three tests against the reference; Holm's adjustment runs within each (its family).
TEST_KINDS = ("test_auc", "oof_auc", "test_accuracy")


@dataclass(frozen=True)
class Contrast:
    """A variant against the reference, paired on the images both scored."""

    test_auc: DelongResult | None
    oof_auc: DelongResult | None
    test_accuracy: McNemarResult | None
    notes: tuple[str, ...] = ()
    holm: dict[str, float] = field(default_factory=dict)  # test kind -> Holm-adjusted p

    def result(self, kind: str) -> DelongResult | McNemarResult | None:
        return getattr(self, kind)

    def p(self, kind: str) -> float:
        """The raw p-value of test `kind` (NaN when not run or untestable)."""
        found = self.result(kind)
        return found.p_value if found is not None else float("nan")


@dataclass
class VariantResult:
    label: str
    settings: dict[str, str]
    cell: CellRun
    predictions: pd.DataFrame
    cv: dict[str, float]  # <metric>_mean / <metric>_std over folds
    test: dict[str, float]
    test_ci: dict[str, tuple[float, float]]  # bootstrap, or exact where it degenerates
    oof: dict[str, float]
    test_exact: dict[str, ExactInterval] = field(default_factory=dict)  # the exact ones
    contrast: Contrast | None = None  # None for the reference row

    @property
    def n_folds(self) -> int:
        return len(self.cell.folds) or self.cell.n_folds

    def split(self, name: str) -> pd.DataFrame:
        return self.predictions[self.predictions["split"] == name]


@dataclass(frozen=True)
class Fact:
    """One condition of the runs (dataset, image size, ...) and each variant's value of it."""

    name: str
    values: dict[str, str]  # variant label -> value

    @property
    def shared(self) -> bool:
        return len(set(self.values.values())) <= 1

    def by_value(self) -> dict[str, list[str]]:
        """Each distinct value and the variants that have it, in row order."""
        grouped: dict[str, list[str]] = {}
        for label, value in self.values.items():
            grouped.setdefault(value, []).append(label)
        return grouped


@dataclass
class Comparison:
    variants: list[VariantResult]
    reference: str
    keys: list[str]  # configuration keys that name the variants
    skipped: list[Skipped]
    source: dict[str, str]  # store, experiment, sweep, filter
    n_boot: int
    level: float
    grouped: bool  # bootstrap resampled patients (group ids) rather than images
    extra_metrics: list[str] = field(default_factory=list)  # cell-run metrics shown as columns
    facts: list[Fact] = field(default_factory=list)  # what the variants share, or not

    @property
    def alpha(self) -> float:
        """The tests' level, matching the intervals' coverage (0.05 for 95 %)."""
        return round(1 - self.level, 10)


def _settings_table(cells: list[CellRun]) -> pd.DataFrame:
    """One row per cell: group choices (`optimizer`) and flattened params (`data.channels`); a
    cell trained before a key existed has that key's former value (`evaluation.tta=none`)."""
    rows = []
    for cell in cells:
        row = {k: str(v) for k, v in KEYED_ONLY_WHEN_SET.items()}
        row.update({k[len(CHOICE) :]: v for k, v in cell.tags.items() if k.startswith(CHOICE)})
        params = {
            k: v
            for k, v in cell.params.items()
            if not any(k == p or k.startswith(p + ".") for p in IGNORED_PARAMS)
        }
        row.update(_list_elements(params))
        rows.append(row)
    return pd.DataFrame(rows).fillna("-").astype(str)


def _list_elements(params: dict[str, Any]) -> dict[str, Any]:
    """A param that holds a list of mappings (`augmentation.transforms`, logged as JSON) as one
    column per element's key (`augmentation.transforms.0.scale`), so that a row is named by what
    changed in the list (as the command line's `augmentation.transforms.0.scale=...` says),
    not by the whole list."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        items = _json_list(value)
        if items is None or not any(isinstance(item, dict) for item in items):
            out[key] = value
            continue
        for i, item in enumerate(items):
            if isinstance(item, dict):
                out.update(_list_elements(flatten(item, f"{key}.{i}.")))
            else:
                out[f"{key}.{i}"] = json.dumps(item)
    return out


def _json_list(value: Any) -> list | None:
    if not isinstance(value, str) or not value.startswith("["):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, list) else None


def _determined(table: pd.DataFrame, keys: list[str], column: str) -> bool:
    """Whether `column` is a function of the `keys` columns across the cells."""
    if not keys:
        return table[column].nunique() <= 1
    return bool((table.groupby(keys)[column].nunique() <= 1).all())


def varying_keys(cells: list[CellRun]) -> list[str]:
    """The fewest configuration keys that tell the cells apart, group choices first.

    `optimizer=adam,sgd` changes optimizer._target_, .lr, .momentum...: all follow from the
    group choice, so the label is `optimizer=...`. A key is added only when the keys so far do
    not already determine it (e.g. `optimizer.lr` overridden within one optimizer). Presets
    (`experiment=...`) come last: Table 3's reference cell, trained first under Table 2's preset,
    is still named `model=fus2net`. A key given on the command line always names the rows where it
    varies: two cells that differ in two keys set by hand show both, even when one would do.
    """
    table = _settings_table(cells)
    groups = [c for c in table.columns if "." not in c and c not in cells[0].params]
    presets = [g for g in groups if g in PRESET_GROUPS]
    groups = [g for g in groups if g not in presets]
    # a key given on the command line (`trainer.max_epochs=30,20`) before those that follow
    # from it by interpolation (`scheduler.max_epochs`)
    given = {
        t.removeprefix(schema.OVERRIDE_PREFIX)
        for c in cells
        for t in c.tags
        if t.startswith(schema.OVERRIDE_PREFIX)
    }
    rest = sorted(c for c in table.columns if c not in groups + presets)
    ordered = groups + [c for c in rest if c in given] + [c for c in rest if c not in given]
    ordered += presets
    keys: list[str] = []
    for column in ordered:
        if table[column].nunique() > 1 and (
            column in given or not _determined(table, keys, column)
        ):
            keys.append(column)
    return keys


def variant_settings(
    cells: list[CellRun], by: list[str] | None = None
) -> tuple[list[str], list[dict[str, str]]]:
    """The naming keys (given with `--by`, or found) and each cell's values of them."""
    table = _settings_table(cells)
    keys = list(by) if by else varying_keys(cells)
    for key in keys:
        if key not in table.columns:
            close = difflib.get_close_matches(key, list(table.columns), n=5)
            raise ValueError(
                f"--by {key}: no such group or config key in these runs"
                + (f"; did you mean {', '.join(close)}?" if close else "")
            )
    settings = [{k: str(table.at[i, k]) for k in keys} for i in range(len(cells))]
    labels = [_label(s) for s in settings]
    duplicated = {x for x in labels if labels.count(x) > 1}
    if duplicated and by:
        rest = [k for k in varying_keys(cells) if k not in keys]
        raise ValueError(
            f"--by {' '.join(by)} gives several cells the label {sorted(duplicated)[0]!r}; they "
            f"also differ in {', '.join(rest) or 'nothing logged'}: add those keys to --by, or "
            "narrow the runs with --sweep/--filter"
        )
    return keys, settings


def _label(settings: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items()) or "all cells"


def _pair(
    ref: pd.DataFrame, other: pd.DataFrame, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Labels and both variants' probabilities on the images both scored, matched by path."""
    key = ["path", "_n"]
    a = ref.assign(_n=ref.groupby("path").cumcount())
    b = other.assign(_n=other.groupby("path").cumcount())
    merged = a.merge(b, on=key, suffixes=("_ref", "_var"))
    note = ""
    if len(merged) < max(len(a), len(b)):
        note = (
            f"{what}: paired on the {len(merged)} images both scored "
            f"({len(a)} in the reference, {len(b)} here)"
        )
    if (merged["label_ref"] != merged["label_var"]).any():
        raise ValueError(f"{what}: the same image has different labels in two runs")
    return (
        merged["label_ref"].to_numpy(int),
        merged["prob_ref"].to_numpy(float),
        merged["prob_var"].to_numpy(float),
        note,
    )


def _delong(labels: np.ndarray, p_var: np.ndarray, p_ref: np.ndarray) -> DelongResult | None:
    try:
        return delong_test(labels, p_var, p_ref)
    except ValueError:  # fewer than 2 images of a class in common
        return None


def contrast(reference: VariantResult, variant: VariantResult) -> Contrast:
    """Paired tests of `variant` against `reference` (difference = variant - reference)."""
    notes = []
    labels, p_ref, p_var, note = _pair(reference.split("test"), variant.split("test"), "test")
    notes += [note] if note else []
    test_auc = _delong(labels, p_var, p_ref) if len(labels) else None
    accuracy = mcnemar_test(labels, p_var >= THRESHOLD, p_ref >= THRESHOLD) if len(labels) else None
    labels, p_ref, p_var, note = _pair(reference.split("oof"), variant.split("oof"), "out-of-fold")
    notes += [note] if note else []
    oof_auc = _delong(labels, p_var, p_ref) if len(labels) else None
    return Contrast(test_auc, oof_auc, accuracy, tuple(notes))


def class_names_of(cell: CellRun) -> list[str] | None:
    """The class names of labels 0 and 1 as the cell logged them: the dataset config's
    `dataset.classes` where it lists them, else the per-class counts of the cell's MLflow
    dataset inputs (logged in label order by every cell, whatever the source); None when
    neither is there (a cell logged before either existed)."""
    try:
        names = json.loads(cell.params.get("dataset.classes", "null"))
    except json.JSONDecodeError:
        names = None
    if isinstance(names, list) and len(names) == 2:
        return [str(n) for n in names]
    inputs = getattr(cell.run, "inputs", None)
    for dataset_input in getattr(inputs, "dataset_inputs", None) or []:
        try:
            per_class = json.loads(dataset_input.dataset.profile or "{}").get("per_class")
        except (AttributeError, json.JSONDecodeError):
            continue
        if isinstance(per_class, dict) and len(per_class) == 2:
            return [str(n) for n in per_class]
    return None


def _class_names(cell: CellRun) -> tuple[str, str]:
    """The names of labels 0 and 1 where the cell logged them, else neutral ones."""
    names = class_names_of(cell)
    if names is not None:
        return f"{names[0]} (label 0)", f"{names[1]} (label 1)"
    return "label 0 (negative)", "label 1 (positive)"


def _class_counts(part: pd.DataFrame, names: tuple[str, str]) -> str:
    counts = part["label"].astype(int).value_counts()
    text = f"{len(part)} images: {counts.get(0, 0)} {names[0]}, {counts.get(1, 0)} {names[1]}"
    groups = patient_groups(part)
    return text + (f"; {len(set(groups))} patients" if groups is not None else "")


def _run_value(cell: CellRun, keys: tuple[str, ...]) -> str:
    for key in keys:
        value = cell.tags.get(key, cell.params.get(key))
        if value not in (None, "", "None"):
            return str(value)
    return NOT_LOGGED


def _counts_of(split: str) -> Callable[[VariantResult], str]:
    return lambda v: _class_counts(v.split(split), _class_names(v.cell))


def _logged(*keys: str) -> Callable[[VariantResult], str]:
    return lambda v: _run_value(v.cell, keys)


# What a report states about the runs: name and how to read it (tags first, as logged).
FACTS: tuple[tuple[str, Callable[[VariantResult], str]], ...] = (
    ("dataset", _logged(schema.DATASET, "dataset.name")),
    ("dataset fingerprint", _logged(schema.DATASET_FINGERPRINT, "dataset.fingerprint")),
    ("test set", _counts_of("test")),
    ("training pool (out-of-fold)", _counts_of("oof")),
    ("model", _logged("model.name", CHOICE + "model")),
    ("image size (px)", _logged("data.image_size")),
    ("input channels", _logged("data.channels")),
    ("epochs", _logged("trainer.max_epochs")),
    ("folds", _logged("cv.folds")),
    ("test-set scoring", _logged("cv.test_scoring")),
)


def shared_facts(variants: list[VariantResult]) -> list[Fact]:
    """What the variants were run with, from their cell runs and predictions: the conditions a
    reader needs before trusting a difference (same data, same test images, same budget)."""
    facts = [Fact(name, {v.label: read(v) for v in variants}) for name, read in FACTS]
    return [f for f in facts if set(f.values.values()) != {NOT_LOGGED}]


def _variant(
    cell: CellRun, label: str, settings: dict[str, str], preds: pd.DataFrame, boot: dict
) -> VariantResult:
    test, oof = preds[preds["split"] == "test"], preds[preds["split"] == "oof"]
    if cell.folds and len(cell.folds) == cell.n_folds:
        cv = mean_std(cell.folds.values())
    else:  # fold runs not found: the cell's own summary of them
        cv = {
            f"{m}_{s}": cell.metrics[f"cv/{m}_{s}"]
            for m in METRICS
            for s in ("mean", "std")
            if f"cv/{m}_{s}" in cell.metrics
        }
    labels, probs = test["label"].to_numpy(int), test["prob"].to_numpy(float)
    ci = bootstrap_intervals(labels, probs, groups=patient_groups(test), **boot)
    exact = exact_fallbacks(labels, probs, ci, level=boot["level"], threshold=THRESHOLD)
    return VariantResult(
        label=label,
        settings=settings,
        cell=cell,
        predictions=preds,
        cv=cv,
        test=binary_metrics(labels, probs, THRESHOLD),
        test_ci={**ci, **{m: (e.low, e.high) for m, e in exact.items()}},
        oof=binary_metrics(oof["label"].to_numpy(int), oof["prob"].to_numpy(float), THRESHOLD),
        test_exact=exact,
    )


def adjust_for_multiplicity(variants: list[VariantResult]) -> None:
    """Holm's step-down within each test kind, over every variant's test against the reference."""
    tested = [(v, v.contrast) for v in variants if v.contrast is not None]
    adjusted = {kind: holm([c.p(kind) for _, c in tested]) for kind in TEST_KINDS}
    for i, (v, c) in enumerate(tested):
        v.contrast = replace(c, holm={kind: adjusted[kind][i] for kind in TEST_KINDS})


def pick_reference(labels: list[str], reference: str | None) -> int:
    """Row index of `--reference`: a full label, a value naming one row, or a 1-based number."""
    if not reference:
        return 0
    if reference in labels:
        return labels.index(reference)
    if reference.isdigit() and 1 <= int(reference) <= len(labels):
        return int(reference) - 1
    hits = [i for i, label in enumerate(labels) if reference in label.replace("=", " ").split()]
    if len(hits) == 1:
        return hits[0]
    raise ValueError(
        f"--reference {reference!r} names {'several' if hits else 'no'} variant(s); "
        f"choose one of: {'; '.join(labels)} (or its row number)"
    )


def check_metric_names(cells: list[CellRun], names: list[str]) -> None:
    """`--metrics` names each logged by at least one cell; a typo is an error with the closest
    names, not a column of n/a that reads as "not logged"."""
    logged = sorted({m for cell in cells for m in cell.metrics})
    for name in names:
        if name not in logged:
            close = difflib.get_close_matches(name, logged, n=3)
            raise ValueError(
                f"--metrics {name}: no compared cell run logged a metric of that name"
                + (f"; did you mean {', '.join(close)}?" if close else "")
                + f" (the cells logged {len(logged)} metrics; a cell run's Metrics tab in "
                "MLflow lists them)"
            )


def build_comparison(
    tracker: MlflowTracker,
    runs: SweepRuns,
    download_dir: Path,
    by: list[str] | None = None,
    reference: str | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    extra_metrics: list[str] | None = None,
) -> Comparison:
    """Everything the tables and figures show, computed once."""
    if not runs.cells:
        listed = "; ".join(f"{s.name}: {s.reason}" for s in runs.skipped)
        raise ValueError(f"no complete cell to compare ({runs.query}). Left out: {listed}")
    check_metric_names(runs.cells, extra_metrics or [])
    boot = {"n_boot": n_boot, "level": level, "seed": seed}
    skipped = list(runs.skipped)
    variants = []
    for cell in runs.cells:  # a cell that cannot be read goes to "Not compared", never fails all
        try:
            predictions = load_predictions(tracker, cell, download_dir)
            variants.append(_variant(cell, "", {}, predictions, boot))
        except Exception as err:  # a missing or malformed predictions.csv, a store error
            skipped.append(unreadable_cell(cell, err))
    if not variants:
        listed = "; ".join(f"{s.name}: {s.reason}" for s in skipped)
        raise ValueError(f"no complete cell to compare ({runs.query}). Left out: {listed}")
    keys, settings = variant_settings([v.cell for v in variants], by)
    for v, s in zip(variants, settings, strict=True):
        v.label, v.settings = _label(s), s
    labels = [v.label for v in variants]
    if len(set(labels)) < len(labels):  # identical configurations (e.g. another dataset copy)
        for v in variants:
            v.label = f"{v.label} #{v.cell.run_id[:7]}"
    ref = variants[pick_reference([v.label for v in variants], reference)]
    for v in list(variants):
        if v is not ref:
            try:
                v.contrast = contrast(ref, v)
            except Exception as err:  # e.g. an image labelled otherwise than in the reference
                variants.remove(v)
                reason = f"cannot be paired with the reference {ref.label}: {err}"
                skipped.append(Skipped(v.cell.run_id, v.cell.name, "UNPAIRED", reason))
    adjust_for_multiplicity(variants)
    grouped = all(patient_groups(v.split("test")) is not None for v in variants)
    source = {
        "store": without_credentials(tracker.uri),  # written to files and logged
        "experiment": tracker.experiment_name,
        "sweep": ", ".join(runs.sweeps),
        "filter": runs.query,
    }
    return Comparison(
        variants,
        ref.label,
        keys,
        skipped,
        source,
        n_boot,
        level,
        grouped,
        list(extra_metrics or []),
        shared_facts(variants),
    )
