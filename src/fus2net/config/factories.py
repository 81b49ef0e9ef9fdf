"""The one place where the job's config becomes the objects and plain values of the layers below.

As lightning-hydra-template's `train.py` does at its top, a fold's network, LightningModule, data
module and Trainer are built here, once, and passed down: nothing below `config` reads the
config. Each group has its small factory; the job's steps call these, never the config's keys
for them, so that switching the config to a typed model changes this module alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import albumentations as A
import pytorch_lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fus2net.data.datamodule import FoldDataModule
from fus2net.data.transforms import build_augmentation
from fus2net.inference.spec import Member, ModelSpec, trained_spec
from fus2net.models import create_model, input_normalization
from fus2net.models.lesion_crop import LesionCropNet, LesionCropSettings
from fus2net.models.pretrained import Normalization
from fus2net.tracking.uris import redact_values
from fus2net.training.compiled import compile_network
from fus2net.training.fold import (
    FitRun,
    FoldData,
    FoldResult,
    TrainerSettings,
    fold_trainer,
    train_model,
)
from fus2net.training.module import BUSClassifier
from fus2net.training.precision import effective_precision

# Keys of the `trainer` group that are ours, not pytorch_lightning.Trainer arguments.
TRAINER_EXTRAS = ("channels_last", "compile", "threads")


def resolved_container(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain Python, interpolations resolved, Hydra's own node left out, and
    every credential in it hidden: params, config.yaml and the cell key are made of it, and a
    credential from the environment (`${oc.env:MLFLOW_TRACKING_URI}`) resolves into it."""
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    return redact_values(data)


def model_options(cfg: DictConfig) -> dict[str, Any]:
    """The `model` group as `create_model`'s keyword arguments: its name and its own options."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model, dict)
    return model


def lesion_crop_settings(cfg: DictConfig) -> LesionCropSettings | None:
    """`model.lesion_crop` (None: the classifier sees the whole image)."""
    options = cfg.model.get("lesion_crop")  # only lesion_crop=segmenter adds the key
    if options is None:
        return None
    plain = OmegaConf.to_container(options, resolve=True)
    assert isinstance(plain, dict)
    return LesionCropSettings.model_validate(plain)


def normalization(cfg: DictConfig) -> Normalization | None:
    """The input normalisation the `model` group's weights expect (None: per-image)."""
    return input_normalization(model_options(cfg), int(cfg.data.channels))


def network(
    cfg: DictConfig, num_classes: int, segmenter: Mapping[str, torch.Tensor] | None = None
) -> nn.Module:
    """The registry model of the `model` group, for `data.channels` input channels and the
    `regularization.dropout` before its classifier; behind the job's trained lesion
    `segmenter` when `model.lesion_crop` asks for one."""
    net = create_model(
        **model_options(cfg),
        in_chans=int(cfg.data.channels),
        num_classes=num_classes,
        drop_rate=float(cfg.regularization.dropout),
    )
    if isinstance(net, LesionCropNet):
        if segmenter is None:
            raise ValueError("model.lesion_crop: the job's trained segmenter was not passed")
        net.segmenter.load_state_dict(segmenter)
    return net


def lightning_module(
    cfg: DictConfig, net: nn.Module, class_weights: torch.Tensor | None
) -> BUSClassifier:
    """The LightningModule that trains `net` with the `optimizer`, `scheduler` and
    `regularization` groups and `evaluation.tta`; `trainer.compile` compiles its network."""
    # a _target_ node: scheduler=none has `_target_: null`, one of one's own may have none
    scheduler = instantiate(cfg.scheduler) if cfg.scheduler.get("_target_") else None
    module = BUSClassifier(
        net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        l2=float(cfg.regularization.l2),
        class_weights=class_weights,
        channels_last=bool(cfg.trainer.channels_last),
        label_smoothing=float(cfg.regularization.label_smoothing),
        tta=str(cfg.evaluation.tta),
        layer_decay=cfg.regularization.layer_decay,
    )
    if cfg.trainer.get("compile"):  # a trainer option of one's own may leave it out (off)
        compile_network(module.net, str(cfg.trainer.accelerator))
    return module


def augmentation(cfg: DictConfig) -> A.BaseCompose | None:
    """The training augmentation of the `augmentation` group (None: `augmentation=none`)."""
    if not cfg.augmentation:
        return None
    options = OmegaConf.to_container(cfg.augmentation, resolve=True)
    assert isinstance(options, dict)
    return build_augmentation(options)


def fold_datamodule(cfg: DictConfig, data: FoldData, seed: int) -> FoldDataModule:
    """The fold's loaders as `cfg` sets them up (balance, augmentation, workers)."""
    return FoldDataModule(
        data.images,
        data.labels,
        data.train_idx,
        data.val_idx,
        data.test_idx,
        batch_size=int(cfg.data.batch_size),
        augmentation=augmentation(cfg),
        balance=str(cfg.balance.mode),
        # only balance=weighted has a strategy
        sampler_weighting=cfg.balance.get("strategy", "loss") == "sampler",
        num_workers=int(cfg.data.num_workers),
        seed=seed,
        pin_memory=cfg.trainer.accelerator == "gpu",
        normalization=normalization(cfg),
    )


def trainer_settings(cfg: DictConfig) -> TrainerSettings:
    """The `trainer` group less its project keys (`TRAINER_EXTRAS`) as Lightning's arguments,
    its precision as this machine runs it, and the weights the fold keeps (`cv.checkpoint`,
    `regularization.ema_decay`)."""
    arguments = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(arguments, dict)
    for key in TRAINER_EXTRAS:
        arguments.pop(key, None)
    arguments["precision"] = effective_precision(
        str(cfg.trainer.precision), str(cfg.trainer.accelerator)
    )
    decay = cfg.regularization.ema_decay
    return TrainerSettings(
        arguments,
        keep_best=cfg.cv.checkpoint == "best",
        ema_decay=None if decay is None else float(decay),
    )


def train_fold(
    cfg: DictConfig,
    data: FoldData,
    seed: int,
    num_classes: int,
    run: FitRun,
    segmenter: Mapping[str, torch.Tensor] | None = None,
) -> FoldResult:
    """One model of `cfg` trained on `data` (`fus2net.training.fold.train_model`): after
    seeding `seed`, its data module, network, LightningModule and Trainers built once here
    (`segmenter`: the job's lesion segmenter, for `model.lesion_crop`)."""
    L.seed_everything(seed, workers=True, verbose=False)
    datamodule = fold_datamodule(cfg, data, seed)
    net = network(cfg, num_classes, segmenter)
    module = lightning_module(cfg, net, datamodule.class_weights)
    trainer = fold_trainer(trainer_settings(cfg), run, validate=len(data.val_idx) > 0)
    return train_model(module, datamodule, trainer)


def model_spec(cfg: DictConfig, class_names: list[str], members: list[Member]) -> ModelSpec:
    """The spec of the models `cfg` trains (no thresholds or calibration yet)."""
    return trained_spec(
        model_options(cfg),
        class_names,
        members,
        in_chans=int(cfg.data.channels),
        image_size=int(cfg.data.image_size),
        drop_rate=float(cfg.regularization.dropout),
        cam_layer=str(cfg.evaluation.gradcam.layer or "auto"),
        tta=str(cfg.evaluation.tta),
        resize=str(cfg.data.resize),
    )
