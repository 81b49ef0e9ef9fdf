"""The per-image predictions table every run logs (`predictions.csv`), built and checked here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fus2net.tracking.schema import GROUP_COLUMN, PREDICTION_COLUMNS, SOURCE_COLUMN, Split

REQUIRED_COLUMNS = ("path", "label", "prob", "split")


def predictions_frame(
    paths: list[str],
    labels: np.ndarray,
    probs: np.ndarray,
    fold: int | str,
    split: str,
    groups: list[str | None] | None = None,
    sources: list[str | None] | None = None,
) -> pd.DataFrame:
    """Per-image predictions in the column order every tool of the project reads.

    A `group` (patient) column is added where the source has group ids, so that bootstrap
    intervals can resample patients rather than images; a `source` column where the images
    come from the members of a pooled dataset.
    """
    frame = pd.DataFrame(
        {
            "path": paths,
            "label": np.asarray(labels, dtype=int),
            "prob": np.asarray(probs, dtype=float),
            "fold": fold,
            "split": split,
        },
        columns=list(PREDICTION_COLUMNS),
    )
    if groups is not None and any(g is not None for g in groups):
        frame[GROUP_COLUMN] = groups
    if sources is not None and any(s is not None for s in sources):
        frame[SOURCE_COLUMN] = sources
    return frame


def patient_groups(preds: pd.DataFrame) -> list[str] | None:
    """Patient ids of `preds` when every image has one (its `group` column), else None: what
    bootstrap intervals resample by."""
    if GROUP_COLUMN not in preds.columns or preds[GROUP_COLUMN].isna().any():
        return None
    return preds[GROUP_COLUMN].astype(str).tolist()


def read_cell_predictions(path: Path, run_id: str) -> pd.DataFrame:
    """A cell run's `predictions.csv` (pooled out-of-fold and test rows), checked."""
    frame = pd.read_csv(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path} (run {run_id}) lacks column(s) {missing}; expected "
            f"{list(REQUIRED_COLUMNS)}: was it written by fus2net-train?"
        )
    splits = set(frame["split"])
    if not {Split.OOF.value, Split.TEST.value} <= splits:
        raise ValueError(
            f"{path} (run {run_id}) has splits {sorted(splits)}; a cell's predictions need "
            "both 'oof' and 'test' rows"
        )
    return frame
