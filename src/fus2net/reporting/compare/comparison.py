"""Compare the cells of a sweep: which variant is better, by how much, and is it real.

Rows are variants, named by the configuration that differs between cells (found here, not
typed in). For each: cross-validation mean +/- sd over folds, the held-out test set with
bootstrap intervals, and, against a reference row, paired tests on the same images: DeLong
for AUC (test set and pooled out-of-fold predictions) and McNemar for accuracy.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fus2net.evaluation.metrics import METRICS, binary_metrics, mean_std
from fus2net.evaluation.stats import (
    DelongResult,
    McNemarResult,
    bootstrap_intervals,
    delong_test,
    mcnemar_test,
)
from fus2net.reporting.compare.runs import CellRun, Skipped, SweepRuns, load_predictions
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.predictions import patient_groups
from fus2net.tracking.provenance import NON_RESULT_KEYS
from fus2net.tracking.uris import without_credentials

THRESHOLD = 0.5  # the operating point every logged metric uses
# Params that describe where or how fast, or restate the data; never a variant's name.
IGNORED_PARAMS = (*NON_RESULT_KEYS, "dataset.fingerprint", "trainer.threads", "trainer.devices")
CHOICE = "choice."


@dataclass(frozen=True)
class Contrast:
    """A variant against the reference, paired on the images both scored."""

    test_auc: DelongResult | None
    oof_auc: DelongResult | None
    test_accuracy: McNemarResult | None
    notes: tuple[str, ...] = ()


@dataclass
class VariantResult:
    label: str
    settings: dict[str, str]
    cell: CellRun
    predictions: pd.DataFrame
    cv: dict[str, float]  # <metric>_mean / <metric>_std over folds
    test: dict[str, float]
    test_ci: dict[str, tuple[float, float]]
    oof: dict[str, float]
    contrast: Contrast | None = None  # None for the reference row

    @property
    def n_folds(self) -> int:
        return len(self.cell.folds) or self.cell.n_folds

    def split(self, name: str) -> pd.DataFrame:
        return self.predictions[self.predictions["split"] == name]


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


def _settings_table(cells: list[CellRun]) -> pd.DataFrame:
    """One row per cell: group choices (`optimizer`) and flattened params (`data.channels`)."""
    rows = []
    for cell in cells:
        row = {k[len(CHOICE) :]: v for k, v in cell.tags.items() if k.startswith(CHOICE)}
        row.update(
            {
                k: v
                for k, v in cell.params.items()
                if not any(k == p or k.startswith(p + ".") for p in IGNORED_PARAMS)
            }
        )
        rows.append(row)
    return pd.DataFrame(rows).fillna("-").astype(str)


def _determined(table: pd.DataFrame, keys: list[str], column: str) -> bool:
    """Whether `column` is a function of the `keys` columns across the cells."""
    if not keys:
        return table[column].nunique() <= 1
    return bool((table.groupby(keys)[column].nunique() <= 1).all())


def varying_keys(cells: list[CellRun]) -> list[str]:
    """The fewest configuration keys that tell the cells apart, group choices first.

    `optimizer=adam,sgd` changes optimizer._target_, .lr, .momentum...: all follow from the
    group choice, so the label is `optimizer=...`. A key is added only when the keys so far do
    not already determine it (e.g. `optimizer.lr` overridden within one optimizer).
    """
    table = _settings_table(cells)
    groups = [c for c in table.columns if "." not in c and c not in cells[0].params]
    ordered = groups + sorted(c for c in table.columns if c not in groups)
    keys: list[str] = []
    for column in ordered:
        if table[column].nunique() > 1 and not _determined(table, keys, column):
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
    return VariantResult(
        label=label,
        settings=settings,
        cell=cell,
        predictions=preds,
        cv=cv,
        test=binary_metrics(labels, probs, THRESHOLD),
        test_ci=bootstrap_intervals(labels, probs, groups=patient_groups(test), **boot),
        oof=binary_metrics(oof["label"].to_numpy(int), oof["prob"].to_numpy(float), THRESHOLD),
    )


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
    keys, settings = variant_settings(runs.cells, by)
    boot = {"n_boot": n_boot, "level": level, "seed": seed}
    variants = [
        _variant(cell, _label(s), s, load_predictions(tracker, cell, download_dir), boot)
        for cell, s in zip(runs.cells, settings, strict=True)
    ]
    labels = [v.label for v in variants]
    if len(set(labels)) < len(labels):  # identical configurations (e.g. another dataset copy)
        for v in variants:
            v.label = f"{v.label} #{v.cell.run_id[:7]}"
    ref = variants[pick_reference([v.label for v in variants], reference)]
    for v in variants:
        if v is not ref:
            v.contrast = contrast(ref, v)
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
        runs.skipped,
        source,
        n_boot,
        level,
        grouped,
        list(extra_metrics or []),
    )
