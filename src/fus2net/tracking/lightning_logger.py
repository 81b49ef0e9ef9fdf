"""Lightning logger that writes epoch metrics into an existing MLflow run via MlflowTracker."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

if TYPE_CHECKING:
    from fus2net.tracking.mlflow_tracker import MlflowTracker


class MlflowRunLogger(Logger):
    """Lightning logger writing epoch metrics into an existing run, with step = epoch."""

    def __init__(self, tracker: MlflowTracker, run_id: str) -> None:
        super().__init__()
        self._tracker = tracker
        self._run_id = run_id

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
        clean = {re.sub(r"[^\w\-./ ]", "_", k): v for k, v in metrics.items()}
        if clean:
            self._tracker.log_metrics(
                self._run_id, clean, step=int(epoch) if epoch is not None else int(step or 0)
            )
