"""Train and score one model: a cross-validation fold, or the refit on all training images."""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import (
    Callback,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
)

from fus2net.data.datamodule import FoldDataModule
from fus2net.models import input_normalization
from fus2net.tracking import schema
from fus2net.training.callbacks import EpochThroughput
from fus2net.training.checkpoints import SameFolderCheckpointIO, resumable, save_whole
from fus2net.training.compiled import compile_network
from fus2net.training.module import BUSClassifier
from fus2net.training.precision import effective_precision
from fus2net.training.progress import progress_bar

log = logging.getLogger(__name__)

# Keys of the `trainer` group that are ours, not pytorch_lightning.Trainer arguments.
TRAINER_EXTRAS = ("channels_last", "compile", "threads")


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


class StartEpoch(Callback):
    """Remembers the first epoch this fit trains: 0, or where a resumed checkpoint left off."""

    epoch: int | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.epoch is None:
            self.epoch = int(trainer.current_epoch)


def build_trainer(
    cfg: DictConfig,
    logger: Any,
    callbacks: list[Callback],
    root: Path,
    validate: bool,
    show_progress: bool = True,
    progress_label: str = "",
) -> L.Trainer:
    """A Lightning Trainer from the `trainer` group (its extra keys removed), its progress bar
    fus2net's (training.progress: `progress_label` and epochs from 1)."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(kwargs, dict)
    for key in TRAINER_EXTRAS:
        kwargs.pop(key, None)
    kwargs["precision"] = effective_precision(cfg.trainer)
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


def build_module(
    cfg: DictConfig, num_classes: int, class_weights: torch.Tensor | None
) -> BUSClassifier:
    scheduler = instantiate(cfg.scheduler) if cfg.scheduler.get("_target_") else None
    module = BUSClassifier(
        model=OmegaConf.to_container(cfg.model, resolve=True),  # type: ignore[arg-type]
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        in_chans=int(cfg.data.channels),
        num_classes=num_classes,
        dropout=float(cfg.regularization.dropout),
        l2=float(cfg.regularization.l2),
        class_weights=class_weights,
        channels_last=bool(cfg.trainer.channels_last),
        label_smoothing=float(cfg.regularization.get("label_smoothing", 0.0)),
        tta=str(cfg.get("evaluation", {}).get("tta", "none")),
        layer_decay=cfg.regularization.get("layer_decay"),
    )
    if cfg.trainer.get("compile"):
        compile_network(module.net, str(cfg.trainer.accelerator))
    return module


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


def fold_datamodule(cfg: DictConfig, data: FoldData, seed: int) -> FoldDataModule:
    """The fold's loaders as `cfg` sets them up (balance, augmentation, workers), ready to use."""
    datamodule = FoldDataModule(
        data.images,
        data.labels,
        data.train_idx,
        data.val_idx,
        data.test_idx,
        batch_size=int(cfg.data.batch_size),
        augmentation=instantiate(cfg.augmentation) if cfg.augmentation else None,
        balance=str(cfg.balance.mode),
        sampler_weighting=cfg.balance.get("strategy", "loss") == "sampler",
        num_workers=int(cfg.data.num_workers),
        seed=seed,
        pin_memory=cfg.trainer.accelerator == "gpu",
        normalization=input_normalization(cfg.model, int(cfg.data.channels)),
    )
    datamodule.setup("fit")
    return datamodule


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


def _weight_averaging(cfg: DictConfig) -> list[Callback]:
    """Lightning's EMA of the weights (`regularization.ema_decay`): validated with, saved in
    last.ckpt, and the weights the fold keeps."""
    decay = cfg.regularization.get("ema_decay")
    return [] if decay is None else [EMAWeightAveraging(decay=float(decay))]


def _test_probabilities(
    predictor: L.Trainer, module: BUSClassifier, datamodule: FoldDataModule, test_idx: np.ndarray
) -> np.ndarray:
    """The test set's probabilities, in the order of `test_idx`."""
    test_index, test_prob = _predict(predictor, module, datamodule.test_dataloader())
    if not len(test_index):
        return test_prob
    order = {int(i): n for n, i in enumerate(test_index)}
    return test_prob[[order[int(i)] for i in test_idx]]


def train_model(
    cfg: DictConfig,
    data: FoldData,
    seed: int,
    num_classes: int,
    out_dir: Path,
    logger: Any = False,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    progress_label: str = "",
) -> FoldResult:
    """Fit a fresh model, optimiser and trainer on `data`, then predict validation and test.

    `checkpoint_dir` (default `out_dir/checkpoints`) receives `last.ckpt` after every epoch;
    with `resume`, training continues from the `last.ckpt` found there (an interrupted fold),
    loaded with `weights_only=True`: a checkpoint never runs pickled code.
    """
    L.seed_everything(seed, workers=True, verbose=False)
    datamodule = fold_datamodule(cfg, data, seed)
    module = build_module(cfg, num_classes, datamodule.class_weights)
    validate = len(data.val_idx) > 0
    checkpoint_dir = checkpoint_dir or out_dir / "checkpoints"
    last = checkpoint_dir / "last.ckpt"
    ckpt_path = last if resume and _loadable(last, module) else None
    if ckpt_path is None and checkpoint_dir.is_dir():
        shutil.rmtree(checkpoint_dir)  # a fresh start must not pick up a stale last.ckpt
    start = StartEpoch()
    best = _best_checkpoint(checkpoint_dir) if cfg.cv.checkpoint == "best" and validate else None
    all_callbacks: list[Callback] = [
        # `best` before `last`: Lightning keeps their order, so last.ckpt stores this epoch's
        # best score and path (a resumed fold must not compare against an older best).
        *([best] if best is not None else []),
        # One file, rewritten after every epoch (save_last alone would only write at the end).
        ModelCheckpoint(
            dirpath=checkpoint_dir, filename="last", save_top_k=1, enable_version_counter=False
        ),
        EpochThroughput(),
        start,
        *_weight_averaging(cfg),
        *callbacks,
    ]
    if logger:  # the learning rate of every epoch, logged as schema.LEARNING_RATE
        all_callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer = build_trainer(
        cfg, logger, all_callbacks, out_dir, validate=validate, progress_label=progress_label
    )
    if ckpt_path is not None:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if best is not None and best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
        log.info("restored the weights of the best validation AUC (%.4f)", best.best_model_score)
    weights = out_dir / "model.pt"
    save_whole({k: v.detach().cpu() for k, v in module.net.state_dict().items()}, weights)
    predictor = build_trainer(cfg, False, [], out_dir, validate=False, show_progress=False)
    val_index, val_prob = _predict(
        predictor, module, datamodule.val_dataloader() if validate else None
    )
    test_prob = _test_probabilities(predictor, module, datamodule, data.test_idx)
    return FoldResult(
        val_index=val_index,
        val_prob=val_prob,
        test_prob=test_prob,
        weights=weights,
        epochs_run=int(trainer.current_epoch),
        start_epoch=start.epoch if start.epoch is not None else int(trainer.current_epoch),
    )
