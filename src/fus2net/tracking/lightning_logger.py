"""Lightning's side of tracking: epoch metrics into an existing MLflow run, and a heartbeat."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as L
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from fus2net.tracking import schema
from fus2net.tracking.mlflow_tracker import MlflowTracker

HEARTBEAT_EVERY_S = 60.0


# LearningRateMonitor's names: `lr-<optimizer class>`, with `/<param group>` when it has several.
_LEARNING_RATE = re.compile(r"^lr-[A-Za-z]\w*")


class MlflowRunLogger(Logger):
    """Lightning logger writing epoch metrics into an existing run, with step = epoch.

    Lightning's own epoch metrics carry their `epoch`. LearningRateMonitor's (taken at an
    epoch's start) carry only the batch count and are named after the optimiser class; they
    wait for that epoch's metrics and are logged with them, as `schema.LEARNING_RATE`, so
    that every cell's learning rate is one chart on the epoch axis, resumed folds included.

    With `legacy_names` (a fold of a store written before the per-epoch metrics were renamed,
    resumed) the metrics keep the names the run already holds, so that its curves go on.
    """

    def __init__(self, tracker: MlflowTracker, run_id: str, *, legacy_names: bool = False) -> None:
        super().__init__()
        self._tracker = tracker
        self._run_id = run_id
        self._pending: dict[str, float] = {}
        self._renamed = dict(schema.LEGACY_EPOCH_METRICS) if legacy_names else {}

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self._run_id

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Params are logged once per run by the job itself (the flattened Hydra config)."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        clean = {self._name(k): float(v) for k, v in metrics.items()}
        if epoch is None:
            self._pending.update(clean)
            return
        clean = {**self._pending, **clean}
        self._pending.clear()
        if clean:
            self._tracker.log_metrics(self._run_id, clean, step=int(epoch))

    def _name(self, key: str) -> str:
        name = _metric_name(key)
        return self._renamed.get(name, name)


def _metric_name(key: str) -> str:
    """A Lightning metric key as the run's metric name (MLflow's characters only)."""
    key = _LEARNING_RATE.sub(schema.LEARNING_RATE, key)
    return re.sub(r"[^\w\-./ ]", "_", key)


class Heartbeat(Callback):
    """Writes the heartbeat tag of `run_ids` at most every `every_s` seconds while training,
    so that a job on another host can tell this one is alive (tracking.resume.is_orphan)."""

    def __init__(
        self, tracker: MlflowTracker, run_ids: list[str], every_s: float = HEARTBEAT_EVERY_S
    ) -> None:
        self.tracker = tracker
        self.run_ids = run_ids
        self.every_s = every_s
        self._last = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        for run_id in self.run_ids:
            self.tracker.set_tags(run_id, {schema.HEARTBEAT: str(int(time.time()))})
