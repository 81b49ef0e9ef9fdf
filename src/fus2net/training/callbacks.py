"""Lightning callbacks of the workflow that are not tracking: epoch throughput."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as L
from pytorch_lightning.callbacks import Callback

from fus2net.tracking import schema


class EpochThroughput(Callback):
    """Logs training images/s and seconds per epoch (training batches only, validation aside).

    Logged as `schema.IMAGES_PER_S` and `schema.EPOCH_SECONDS`, so that every run in
    MLflow shows whether it ran on the fast path (bf16 + channels_last) or not; kept per epoch
    in `history` as (images, seconds) too, for benchmarks (`log=False`: history only).
    """

    def __init__(self, log: bool = True) -> None:
        self.log = log
        self.history: list[tuple[int, float]] = []
        self._start = 0.0
        self._last = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = time.perf_counter()
        self._images = 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._images += int(batch[0].shape[0])
        self._last = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = max(self._last - self._start, 1e-9)
        self.history.append((self._images, seconds))
        if self.log:
            pl_module.log(schema.EPOCH_SECONDS, seconds)
            pl_module.log(schema.IMAGES_PER_S, self._images / seconds)
