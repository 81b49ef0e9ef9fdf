"""Train and score one model: a cross-validation fold, or the refit on all training images.

The network, its LightningModule, the fold's data module and its Trainers are built above
(`fus2net.config.factories`) and passed in; this module adds what every fold's fit does the
same: checkpoints a fold resumes from, the weights it keeps, the predictions it returns.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import (
    Callback,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
)

from fus2net.data.datamodule import FoldDataModule
from fus2net.tracking import schema
from fus2net.training.callbacks import EpochThroughput
from fus2net.training.checkpoints import SameFolderCheckpointIO, resumable, save_whole
from fus2net.training.module import BUSClassifier
from fus2net.training.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class FoldData:
    """The decoded images of the job and the indices this model trains, validates and tests on."""

    images: np.ndarray
    labels: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray


@dataclass
class FoldResult:
    """Malignant probabilities of one trained model, and where its weights were saved."""

    val_index: np.ndarray
    val_prob: np.ndarray
    test_prob: np.ndarray  # aligned with FoldData.test_idx
    weights: Path
    epochs_run: int
    start_epoch: int = 0  # > 0: resumed from a checkpoint taken after that many epochs


def quiet_lightning() -> None:
    """Silence what Lightning repeats for every fold (banners, tips, known-harmless warnings);
    called once by a job, never at import."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # resuming a fold
    # Lightning's hint to wrap a job in `srun` on any machine with SLURM installed: a fus2net job
    # is one process (hydra/launcher=slurm submits it), so the hint never applies.
    warnings.filterwarnings("ignore", message=".*The `srun` command is available on your system.*")
    # model.lesion_crop's segmenter is frozen in eval mode on purpose (LesionCropNet.train)
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of train")


class StartEpoch(Callback):
    """Remembers the first epoch this fit trains: 0, or where a resumed checkpoint left off."""

    epoch: int | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.epoch is None:
            self.epoch = int(trainer.current_epoch)


@dataclass(frozen=True)
class TrainerSettings:
    """A fold's Trainer as plain values: Lightning's own arguments, and which weights it keeps."""

    arguments: Mapping[str, Any]  # pytorch_lightning.Trainer keyword arguments
    keep_best: bool = False  # cv.checkpoint=best: the weights of the best validation AUC
    ema_decay: float | None = None  # regularization.ema_decay: train with an EMA of the weights


@dataclass(frozen=True)
class FitRun:
    """Where one fit writes (`model.pt` in `out_dir`, `last.ckpt` after every epoch in
    `checkpoint_dir`, default `out_dir/checkpoints`), whether it continues from that
    `last.ckpt` (an interrupted fold), and what watches it besides fus2net's own callbacks."""

    out_dir: Path
    checkpoint_dir: Path | None = None
    resume: bool = False
    logger: Any = False
    callbacks: Sequence[Callback] = ()
    progress_label: str = ""


@dataclass
class FoldTrainer:
    """The Trainer that fits one model, the one that predicts with it afterwards (no logger,
    callbacks or progress bar), the callbacks the fit is read back from, and its `FitRun`'s
    folders and resume."""

    trainer: L.Trainer
    predictor: L.Trainer
    out_dir: Path
    checkpoint_dir: Path
    start: StartEpoch
    best: ModelCheckpoint | None = None
    resume: bool = False


def build_trainer(
    arguments: Mapping[str, Any],
    logger: Any,
    callbacks: list[Callback],
    root: Path,
    validate: bool,
    show_progress: bool = True,
    progress_label: str = "",
) -> L.Trainer:
    """A Lightning Trainer of `arguments`, its progress bar fus2net's (training.progress:
    `progress_label` and epochs from 1), its checkpoints written whole."""
    kwargs = dict(arguments)
    if not show_progress:
        kwargs["enable_progress_bar"] = False
    if not validate:
        kwargs["limit_val_batches"] = 0
        kwargs["num_sanity_val_steps"] = 0
    kwargs.setdefault("num_sanity_val_steps", 0)
    kwargs.setdefault("plugins", [SameFolderCheckpointIO()])  # checkpoints never torn
    if kwargs.get("enable_progress_bar", True):
        callbacks = [*callbacks, progress_bar(progress_label)]
    return L.Trainer(
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(root),
        enable_model_summary=False,
        **kwargs,
    )


def fold_trainer(settings: TrainerSettings, run: FitRun, validate: bool) -> FoldTrainer:
    """The Trainers of one fit: `last.ckpt` rewritten after every epoch, `best.ckpt` with
    `keep_best` (when there is a validation set), Lightning's EMA with `ema_decay`."""
    checkpoint_dir = run.checkpoint_dir or run.out_dir / "checkpoints"
    start = StartEpoch()
    best = _best_checkpoint(checkpoint_dir) if settings.keep_best and validate else None
    ema = [] if settings.ema_decay is None else [EMAWeightAveraging(decay=settings.ema_decay)]
    callbacks: list[Callback] = [
        # `best` before `last`: Lightning keeps their order, so last.ckpt stores this epoch's
        # best score and path (a resumed fold must not compare against an older best).
        *([best] if best is not None else []),
        # One file, rewritten after every epoch (save_last alone would only write at the end).
        ModelCheckpoint(
            dirpath=checkpoint_dir, filename="last", save_top_k=1, enable_version_counter=False
        ),
        EpochThroughput(),
        start,
        *ema,
        *run.callbacks,
    ]
    if run.logger:  # the learning rate of every epoch, logged as schema.LEARNING_RATE
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer = build_trainer(
        settings.arguments,
        run.logger,
        callbacks,
        run.out_dir,
        validate=validate,
        progress_label=run.progress_label,
    )
    predictor = build_trainer(
        settings.arguments, False, [], run.out_dir, validate=False, show_progress=False
    )
    return FoldTrainer(trainer, predictor, run.out_dir, checkpoint_dir, start, best, run.resume)


def _predict(
    trainer: L.Trainer, module: BUSClassifier, loader: Any
) -> tuple[np.ndarray, np.ndarray]:
    if loader is None or len(loader.dataset) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=float)
    batches = trainer.predict(module, dataloaders=loader)
    index = torch.cat([b["index"] for b in batches]).numpy()
    prob = torch.cat([b["prob"] for b in batches]).float().numpy()
    return index, prob


def _loadable(checkpoint: Path, module: torch.nn.Module | None = None) -> bool:
    """Whether the fold can resume from `checkpoint` (fus2net.training.checkpoints.resumable):
    a torn, tampered or foreign file is reported and training starts over rather than failing
    every re-run."""
    return resumable(checkpoint, module)


def _best_checkpoint(checkpoint_dir: Path) -> ModelCheckpoint:
    """The weights of the best validation AUC (`cv.checkpoint=best`); its state (best path and
    score) is saved in last.ckpt too, so a resumed fold still knows its best epoch so far."""
    return ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="best",
        monitor=schema.epoch_metric(schema.VAL_STAGE, "auc"),
        mode="max",
        save_top_k=1,
        save_weights_only=True,
        enable_version_counter=False,
    )


def _test_probabilities(
    predictor: L.Trainer, module: BUSClassifier, datamodule: FoldDataModule
) -> np.ndarray:
    """The test set's probabilities, in the order of `datamodule.test_idx`."""
    test_index, test_prob = _predict(predictor, module, datamodule.test_dataloader())
    if not len(test_index):
        return test_prob
    order = {int(i): n for n, i in enumerate(test_index)}
    return test_prob[[order[int(i)] for i in datamodule.test_idx]]


def train_model(module: BUSClassifier, datamodule: FoldDataModule, fold: FoldTrainer) -> FoldResult:
    """Fit `module` on `datamodule` with `fold`'s Trainer, then predict validation and test.

    With `fold.resume`, training continues from the `last.ckpt` in `fold.checkpoint_dir` (an
    interrupted fold), loaded with `weights_only=True`: a checkpoint never runs pickled code.
    """
    last = fold.checkpoint_dir / "last.ckpt"
    ckpt_path = last if fold.resume and _loadable(last, module) else None
    if ckpt_path is None and fold.checkpoint_dir.is_dir():
        shutil.rmtree(fold.checkpoint_dir)  # a fresh start must not pick up a stale last.ckpt
    if ckpt_path is not None:
        log.info("resuming from %s", ckpt_path)
    trainer = fold.trainer
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    best = fold.best
    if best is not None and best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
        log.info("restored the weights of the best validation AUC (%.4f)", best.best_model_score)
    weights = fold.out_dir / "model.pt"
    save_whole({k: v.detach().cpu() for k, v in module.net.state_dict().items()}, weights)
    validate = len(datamodule.val_idx) > 0
    val_index, val_prob = _predict(
        fold.predictor, module, datamodule.val_dataloader() if validate else None
    )
    epochs = int(trainer.current_epoch)
    return FoldResult(
        val_index=val_index,
        val_prob=val_prob,
        test_prob=_test_probabilities(fold.predictor, module, datamodule),
        weights=weights,
        epochs_run=epochs,
        start_epoch=epochs if fold.start.epoch is None else fold.start.epoch,
    )
