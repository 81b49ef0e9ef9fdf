"""The job's context: built once at the top from the config, then passed down to every step.

It holds what every step of a job shares (the config, the prepared data, the tracking store,
the output folder, the cell key and the tags and params of the cell's runs), so that no step
takes a bundle of nine parameters and none rebuilds any of it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from fus2net.cell.job_data import JobData, prepare_data
from fus2net.cell.lesion_segmenter_cache import job_segmenter, require_masks
from fus2net.config.factories import lesion_crop_settings, normalization, resolved_container
from fus2net.config.hydra_run import hydra_tags
from fus2net.data.records import Record
from fus2net.data.splits import record_keys, records_fingerprint
from fus2net.tracking import resume, schema
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.predictions import predictions_frame
from fus2net.tracking.provenance import cell_key, flatten, git_state, legacy_cell_key

log = logging.getLogger(__name__)


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
    legacy_key: str = ""  # the key earlier versions gave the cell (provenance.legacy_cell_key)
    _segmenter: dict[str, Tensor] | None = field(default=None, repr=False)

    def lesion_segmenter(self) -> dict[str, Tensor] | None:
        """The job's lesion segmenter for `model.lesion_crop` (None when it asks for none):
        trained, or read from the cache, on first use, so a finished cell trains none."""
        settings = lesion_crop_settings(self.cfg)
        if settings is None:
            return None
        if self._segmenter is None:
            self._segmenter = job_segmenter(
                self.data,
                settings,
                Path(self.cfg.paths.cache_dir),
                str(self.cfg.data.resize),
                normalization(self.cfg),
                int(self.cfg.seed),
            )
        return self._segmenter

    @property
    def n_folds(self) -> int:
        return len(self.data.split.folds)

    @property
    def cell_cfg(self) -> DictConfig:
        """The config of the whole cell: this job's, whichever single fold it runs."""
        return OmegaConf.merge(self.cfg, {"cv": {"fold": None}})  # type: ignore[return-value]

    def fold_dir(self, fold: int) -> Path:
        return self.out / f"fold_{fold}"

    @property
    def cell_dir(self) -> Path:
        """The cell's own folder, the same for every job and re-run of it (per experiment: the
        same cell may be tracked in two at once); its locks and checkpoints live here."""
        experiment = re.sub(r"[^\w.-]", "_", str(self.cfg.tracking.experiment))
        return Path(self.cfg.paths.root) / "outputs" / "cells" / experiment / self.key

    def checkpoint_dir(self, fold: int) -> Path:
        """Where fold `fold` keeps last.ckpt: the same for every re-run of the cell."""
        return self.cell_dir / f"fold_{fold}" / "checkpoints"

    def fold_name(self, fold: int) -> str:
        """`fold k/n`: how logs, run names and plots number the folds (tags and cv.fold: k-1)."""
        return schema.fold_label(fold, self.n_folds)

    @functools.cached_property
    def _record_keys(self) -> list[str]:
        return record_keys(self.data.records)

    def image_set(self, context: schema.Context, idx: np.ndarray) -> schema.ImageSet:
        """The records `idx` of the job's dataset as one dataset input of `context`."""
        data = self.data
        return schema.image_set(
            str(data.description.get("name") or "dataset"),
            data.fingerprint,
            context,
            [self._record_keys[i] for i in idx],
            data.cache.labels[idx].tolist(),
            data.class_names,
            _source(data.description, data.records),
        )

    def fold_image_sets(self, fold: int) -> dict[schema.Context, schema.ImageSet]:
        """What fold `fold` trains, validates and is tested on."""
        train_idx, val_idx = self.data.split.fold(fold)
        return {
            schema.Context.TRAIN: self.image_set(schema.Context.TRAIN, train_idx),
            schema.Context.VALIDATION: self.image_set(schema.Context.VALIDATION, val_idx),
            schema.Context.TEST: self.image_set(schema.Context.TEST, self.data.split.test),
        }

    def cell_image_sets(self) -> list[schema.ImageSet]:
        """What the cell uses: the cross-validated training pool, the test set, and every
        `eval_datasets` entry (as the job listed it, `JobData.external`)."""
        split = self.data.split
        sets = [
            self.image_set(schema.Context.TRAIN, split.train_pool()),
            self.image_set(schema.Context.TEST, split.test),
        ]
        for name, external in self.data.external.items():
            records = external.records
            sets.append(
                schema.image_set(
                    name,
                    records_fingerprint(records),
                    schema.Context.EXTERNAL,
                    record_keys(records),
                    [r.label for r in records],
                    list(external.source.class_names),
                    _source(external.source.describe(), records),
                    name=schema.external_set_name(name),
                )
            )
        return sets

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
            sources=[r.source for r in records],
        )


def _source(description: dict[str, Any], records: list[Record]) -> str:
    """Where a dataset lives: its root (or manifest), else the folder its images share."""
    found = description.get("root") or description.get("options", {}).get("csv")
    if found:
        return str(Path(found).resolve())
    return os.path.commonpath([str(r.image.resolve().parent) for r in records])


def output_dir(cfg: DictConfig) -> Path:
    """Hydra's output folder of this job, or outputs/adhoc outside Hydra (tests, notebooks)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path(cfg.paths.root) / "outputs" / "adhoc"


def build_context(cfg: DictConfig, protocol: str | None = None) -> JobContext:
    """Prepare the data, open the store and name the cell: once per job, before any run;
    `protocol` is the leave-one-source-out key a held-out cell shares with its siblings."""
    data = prepare_data(cfg)
    if lesion_crop_settings(cfg) is not None:
        require_masks(data, _source(data.description, data.records))
    tracker = MlflowTracker(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location
    )
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    config = resolved_container(cfg)
    key = cell_key(config, data.fingerprint)
    tags = {
        schema.CELL_KEY: key,
        schema.DATASET_FINGERPRINT: data.fingerprint,
        schema.DATASET: data.description.get("name", ""),
        **hydra_tags(cfg.tracking.sweep),
        **git_state(),
    }
    if protocol is not None:
        tags[schema.LOSO_KEY] = protocol
        tags[schema.HOLDOUT_SOURCE] = str(cfg.cv.holdout_source)
    params = flatten(config)
    params.update({"dataset.fingerprint": data.fingerprint, "dataset.n_images": len(data.records)})
    n_folds = len(data.split.folds)
    folds = [int(cfg.cv.fold)] if cfg.cv.fold is not None else list(range(n_folds))
    # tracking=local has no stale_after_s (only tracking=server sets one)
    stale = float(cfg.tracking.get("stale_after_s") or resume.STALE_AFTER_S)
    legacy = legacy_cell_key(config, data.fingerprint)
    return JobContext(cfg, data, tracker, out, key, tags, params, folds, stale, legacy)


def threads(cfg: DictConfig) -> int:
    """The CPU threads a job computes with: `trainer.threads`, else every core."""
    return int(cfg.trainer.threads or os.cpu_count() or 1)
