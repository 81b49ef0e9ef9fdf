"""Files logged with every fold and cell run: predictions, ROC and confusion figures, provenance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from fus2net.cell.roc_plot import save_confusion, save_roc
from fus2net.config.factories import resolved_container
from fus2net.evaluation.metrics import confusion
from fus2net.io.files import write_text
from fus2net.tracking.provenance import package_versions
from fus2net.tracking.uris import redact_values


def write_prediction_artifacts(
    preds: pd.DataFrame, out_dir: Path, class_names: list[str], title: str
) -> list[Path]:
    """predictions.csv, one ROC plot of every split, and a confusion matrix per split."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "predictions.csv"]
    write_text(files[0], preds.to_csv(index=False))
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


def write_json(data: Any, path: Path) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def provenance_files(
    cfg: DictConfig, description: dict[str, Any], split_file: Path | None, out: Path
) -> list[Path]:
    """The resolved config, the dataset description, package versions and the split file."""
    config = out / "config.yaml"
    config.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved_container(cfg))))
    files = [
        config,
        write_json(redact_values(description), out / "dataset.json"),  # a root may be a URL
        write_json(package_versions(), out / "environment.json"),
    ]
    if split_file is not None and Path(split_file).exists():
        files.append(Path(shutil.copyfile(split_file, out / "split.json")))
    return files
