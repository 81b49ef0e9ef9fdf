"""The job's context: built once at the top from the config, then passed down to every step.

It holds what every step of a job shares (the config, the prepared data, the tracking store,
the output folder, the cell key and the tags and params of the cell's runs), so that no step
takes a bundle of nine parameters and none rebuilds any of it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from fus2net.experiment.data import JobData, prepare_data
from fus2net.tracking import resume, schema
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.predictions import predictions_frame
from fus2net.tracking.provenance import (
    cell_key,
    flatten,
    git_state,
    hydra_tags,
    resolved_container,
)


@dataclass
class JobContext:
    """Everything a job's steps share; see the module docstring."""

    cfg: DictConfig
    data: JobData
    tracker: MlflowTracker
    out: Path  # the job's output folder (Hydra's)
    key: str  # the cell key
    tags: dict[str, str]  # carried by the cell run and every fold run
    params: dict[str, Any]  # the flattened config, logged once per run
    folds: list[int]  # the folds this job trains (all, or cv.fold)
    stale_after_s: float  # when a RUNNING run of another host counts as orphaned

    @property
    def n_folds(self) -> int:
        return len(self.data.split.folds)

    @property
    def cell_cfg(self) -> DictConfig:
        """The config of the whole cell: this job's, whichever single fold it runs."""
        return OmegaConf.merge(self.cfg, {"cv": {"fold": None}})  # type: ignore[return-value]

    def fold_dir(self, fold: int) -> Path:
        return self.out / f"fold_{fold}"

    def checkpoint_dir(self, fold: int) -> Path:
        """Where fold `fold` keeps last.ckpt: the same for every re-run of the cell (per
        experiment: the same cell may be tracked in two at once)."""
        experiment = re.sub(r"[^\w.-]", "_", str(self.cfg.tracking.experiment))
        cells = Path(self.cfg.paths.root) / "outputs" / "cells"
        return cells / experiment / self.key / f"fold_{fold}" / "checkpoints"

    def predictions(
        self, idx: np.ndarray, probs: np.ndarray, fold: int | str, split: str
    ) -> pd.DataFrame:
        """Predictions of the records `idx`, with their paths, labels and patient groups."""
        records = [self.data.records[i] for i in idx]
        return predictions_frame(
            [str(r.image) for r in records],
            self.data.cache.labels[idx],
            probs,
            fold,
            split,
            groups=[r.group for r in records],
        )


def output_dir(cfg: DictConfig) -> Path:
    """Hydra's output folder of this job, or outputs/adhoc outside Hydra (tests, notebooks)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path(cfg.paths.root) / "outputs" / "adhoc"


def build_context(cfg: DictConfig) -> JobContext:
    """Prepare the data, open the store and name the cell: once per job, before any run."""
    data = prepare_data(cfg)
    tracker = MlflowTracker(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.get("artifact_location")
    )
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    key = cell_key(cfg, data.fingerprint)
    tags = {
        schema.CELL_KEY: key,
        schema.DATASET_FINGERPRINT: data.fingerprint,
        schema.DATASET: data.description.get("name", ""),
        **hydra_tags(cfg.tracking.sweep),
        **git_state(),
    }
    params = flatten(resolved_container(cfg))
    params.update({"dataset.fingerprint": data.fingerprint, "dataset.n_images": len(data.records)})
    n_folds = len(data.split.folds)
    folds = [int(cfg.cv.fold)] if cfg.cv.fold is not None else list(range(n_folds))
    stale = float(cfg.tracking.get("stale_after_s") or resume.STALE_AFTER_S)
    return JobContext(cfg, data, tracker, out, key, tags, params, folds, stale)


def threads(cfg: DictConfig) -> int:
    """The CPU threads a job computes with: `trainer.threads`, else every core."""
    return int(cfg.trainer.threads or os.cpu_count() or 1)
