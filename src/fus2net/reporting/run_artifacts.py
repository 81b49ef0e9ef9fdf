"""Files logged with every fold and cell run: predictions, metrics, ROC and confusion figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fus2net.evaluation.metrics import binary_metrics, confusion
from fus2net.reporting.plots import save_confusion, save_roc

PREDICTION_COLUMNS = ["path", "label", "prob", "fold", "split"]


def predictions_frame(
    paths: list[str],
    labels: np.ndarray,
    probs: np.ndarray,
    fold: int | str,
    split: str,
    groups: list[str | None] | None = None,
) -> pd.DataFrame:
    """Per-image predictions in the column order every tool of the project reads.

    A `group` (patient) column is added where the source has group ids, so that bootstrap
    intervals can resample patients rather than images.
    """
    frame = pd.DataFrame(
        {
            "path": paths,
            "label": np.asarray(labels, dtype=int),
            "prob": np.asarray(probs, dtype=float),
            "fold": fold,
            "split": split,
        },
        columns=PREDICTION_COLUMNS,
    )
    if groups is not None and any(g is not None for g in groups):
        frame["group"] = groups
    return frame


def patient_groups(preds: pd.DataFrame) -> list[str] | None:
    """Patient ids of `preds` when every image has one (its `group` column), else None: what
    bootstrap intervals resample by."""
    if "group" not in preds.columns or preds["group"].isna().any():
        return None
    return preds["group"].astype(str).tolist()


def write_prediction_artifacts(
    preds: pd.DataFrame, out_dir: Path, class_names: list[str], title: str
) -> list[Path]:
    """predictions.csv, one ROC plot of every split, and a confusion matrix per split."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "predictions.csv"]
    preds.to_csv(files[0], index=False)
    curves = {
        f"{split} (n={len(part)})": (part["label"].to_numpy(), part["prob"].to_numpy())
        for split, part in preds.groupby("split", sort=False)
    }
    if curves:
        files.append(save_roc(curves, out_dir / "roc.png", f"ROC: {title}"))
    for split, part in preds.groupby("split", sort=False):
        matrix = confusion(part["label"].to_numpy(), part["prob"].to_numpy())
        files.append(
            save_confusion(
                matrix, class_names, out_dir / f"confusion_{split}.png", f"{title}: {split}"
            )
        )
    return files


def split_metrics(preds: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The paper's metrics for each split of a predictions table."""
    return {
        str(split): binary_metrics(part["label"].to_numpy(), part["prob"].to_numpy())
        for split, part in preds.groupby("split", sort=False)
    }


def write_json(data: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    return path
