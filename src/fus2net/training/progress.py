"""The training progress bar: epochs counted from 1 as the logs count folds (`Epoch 10/10`, not
Lightning's `Epoch 9/9`), what is training in its description (`fold 2/5 · Epoch 3/10`), and no
`v_num` (the logger's version: here a run id's tail, which says nothing at a glance)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as L
from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar
from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar
from pytorch_lightning.utilities.imports import _RICH_AVAILABLE

SEPARATOR = " · "


def epoch_description(label: str, epoch: int, max_epochs: int | None) -> str:
    """`fold 2/5 · Epoch 3/10` for 0-based `epoch` 2 of 10 (no total when training is bounded
    by steps or time: Lightning's max_epochs -1)."""
    text = f"Epoch {epoch + 1}"
    if max_epochs is not None and max_epochs > 0:
        text += f"/{max_epochs}"
    return f"{label}{SEPARATOR}{text}" if label else text


def _without_version(items: dict[str, Any]) -> dict[str, Any]:
    items.pop("v_num", None)
    return items


class RichFoldProgressBar(RichProgressBar):
    """Lightning's rich bar, described by `epoch_description`, without `v_num`."""

    def __init__(self, label: str = "") -> None:
        super().__init__()
        self.label = label

    def _get_train_description(self, current_epoch: int) -> str:
        # The hook Lightning's own bar names its epochs with (it pads to the validation bar's
        # description too, so that the two do not flicker).
        text = epoch_description(self.label, current_epoch, self.trainer.max_epochs)
        return f"{text:{len(self.validation_description)}}"

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return _without_version(super().get_metrics(trainer, pl_module))


class TqdmFoldProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar (where rich is not installed), the same description and metrics."""

    def __init__(self, label: str = "") -> None:
        super().__init__()
        self.label = label

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        description = epoch_description(self.label, trainer.current_epoch, trainer.max_epochs)
        self.train_progress_bar.set_description(description)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return _without_version(super().get_metrics(trainer, pl_module))


def progress_bar(label: str = "") -> ProgressBar:
    """The bar Lightning would pick (rich when installed, else tqdm), in fus2net's words."""
    return RichFoldProgressBar(label) if _RICH_AVAILABLE else TqdmFoldProgressBar(label)
