"""The LightningModule that trains any registry model as a benign (0) / malignant (1) classifier."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as L
import torch
from timm.optim import param_groups_layer_decay
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryPrecision,
    BinaryRecall,
    BinarySpecificity,
)

from fus2net.inference.tta import TTA_MODES, malignant_probability
from fus2net.models import regularized_weight
from fus2net.tracking import schema
from fus2net.training.checkpoints import rename_monitors

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


def epoch_metrics(stage: str) -> MetricCollection:
    """The paper's five metrics with malignant as the positive class, accumulated over an epoch
    and named `schema.epoch_metric(stage, name)` (`auc/val`)."""
    return MetricCollection(
        {
            "accuracy": BinaryAccuracy(),
            "sensitivity": BinaryRecall(),
            "specificity": BinarySpecificity(),
            "precision": BinaryPrecision(),
            "auc": BinaryAUROC(),
        },
        postfix=f"/{stage}",
    )


def undefined_rates(metrics: MetricCollection) -> set[str]:
    """The rates of `epoch_metrics` with a zero denominator this epoch (sensitivity without a
    malignant image, specificity without a benign one, precision without a malignant call):
    torchmetrics reports those as 0.0, a curve that reads "missed every cancer"; they are left
    out of the epoch's log instead, as the fold and cell tables show them "n/a"."""
    counts = metrics["accuracy"]  # the stat-score states (tp, fp, tn, fn) the rates share
    tp, fp, tn, fn = (int(getattr(counts, s).sum()) for s in ("tp", "fp", "tn", "fn"))
    denominators = {"sensitivity": tp + fn, "specificity": tn + fp, "precision": tp + fp}
    return {name for name, n in denominators.items() if n == 0}


def layer_decay_groups(
    net: nn.Module, decay: float, optimizer: OptimizerFactory
) -> list[dict[str, Any]]:
    """Parameter groups whose learning rate shrinks by `decay` per layer from the classifier down
    (`regularization.layer_decay`, BEiT's layer-wise decay): a fine-tuned network keeps its lower,
    general ImageNet layers closer to their weights. The layers are timm's own (`group_matcher`);
    only the rate differs between groups, the optimiser's weight decay applies to each as before.
    """
    if not hasattr(net, "group_matcher"):
        raise ValueError(
            f"regularization.layer_decay={decay}: {type(net).__name__} has no layers to decay "
            "(timm's group_matcher); use a timm backbone (model.source=timm) or "
            "regularization.layer_decay=null"
        )
    lr = getattr(optimizer, "keywords", {}).get("lr")
    if lr is None:
        raise ValueError(
            "regularization.layer_decay needs the optimiser's base rate: set optimizer.lr"
        )
    groups = param_groups_layer_decay(
        net, weight_decay=0.0, layer_decay=decay, weight_decay_exclude_1d=False
    )
    return [{"params": g["params"], "lr": float(lr) * g["lr_scale"]} for g in groups]


class BUSClassifier(L.LightningModule):
    """Cross-entropy training of `net` (any registry model, built by the caller) with Keras-style
    L2 on its first dense layer (paper, Table 2); validation and prediction score with the
    test-time augmentation `tta` (`evaluation.tta`).

    The L2 term is ``l2 * sum(w ** 2)`` over the first dense kernel only, which is what Keras'
    ``kernel_regularizer=l2(0.05)`` adds; PyTorch's ``weight_decay`` would decay every weight
    and scale differently, so it is not used for this. The cross-entropy alone is logged as the
    training loss, comparable with the validation loss; the penalty and the total the optimiser
    minimises are logged beside it.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        *,
        l2: float = 0.0,
        class_weights: torch.Tensor | None = None,
        channels_last: bool = False,
        label_smoothing: float = 0.0,
        tta: str = "none",
        layer_decay: float | None = None,
    ) -> None:
        super().__init__()
        if tta not in TTA_MODES:
            raise ValueError(f"evaluation.tta={tta!r}: use one of {', '.join(TTA_MODES)}")
        # Plain values only: a checkpoint's hyperparameters load with weights_only=True.
        self.save_hyperparameters(
            {
                "l2": l2,
                "channels_last": channels_last,
                "label_smoothing": label_smoothing,
                "tta": tta,
                "layer_decay": layer_decay,
            }
        )
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.l2 = float(l2)
        self.channels_last = channels_last
        self.tta = tta
        self.layer_decay = layer_decay
        self.criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
        self.train_metrics = epoch_metrics(schema.TRAIN_STAGE)
        self.val_metrics = epoch_metrics(schema.VAL_STAGE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def l2_penalty(self) -> torch.Tensor:
        weight = regularized_weight(self.net)
        return self.l2 * weight.float().pow(2).sum()

    def _shared_step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = self.criterion(logits.float(), y)
        losses = {schema.epoch_metric(stage, "loss"): loss}
        if stage == schema.TRAIN_STAGE:
            penalty = self.l2_penalty() if self.l2 > 0 else torch.zeros_like(loss)
            total = loss + penalty
            losses.update({schema.L2_PENALTY: penalty, schema.TOTAL_LOSS: total})
            loss = total
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{stage} loss is {loss.item()} at epoch {self.current_epoch}: training diverged "
                "(lower optimizer.lr, or use trainer.precision=32-true to rule out bf16)"
            )
        with torch.no_grad():  # training scores the batch as it was augmented, without TTA
            tta = "none" if stage == schema.TRAIN_STAGE else self.tta
            prob = malignant_probability(self, x, tta, logits=logits.detach())
        metrics = self.train_metrics if stage == schema.TRAIN_STAGE else self.val_metrics
        metrics.update(prob, y)
        for name, value in losses.items():
            self.log(
                name,
                value,
                on_step=False,
                on_epoch=True,
                batch_size=len(y),
                prog_bar=name == schema.VAL_LOSS,
            )
        return loss

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, schema.TRAIN_STAGE)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._shared_step(batch, schema.VAL_STAGE)

    def _log_epoch(self, metrics: MetricCollection) -> None:
        undefined = undefined_rates(metrics)
        for name, value in metrics.compute().items():
            if name.split("/")[0] in undefined:
                continue
            self.log(name, value, prog_bar=name == schema.epoch_metric(schema.VAL_STAGE, "auc"))
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch(self.train_metrics)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_metrics.reset()
            return
        self._log_epoch(self.val_metrics)

    def predict_step(
        self, batch: tuple[torch.Tensor, ...], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        x, y, idx = batch
        prob = malignant_probability(self, x, self.tta)
        return {"index": idx.cpu(), "label": y.cpu(), "prob": prob.cpu()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A last.ckpt written before the per-epoch metrics were renamed (`val/auc`, now
        `auc/val`) resumes with its best checkpoint's state (`rename_monitors`)."""
        renamed = {old: new for new, old in schema.LEGACY_EPOCH_METRICS.items()}
        rename_monitors(checkpoint, renamed)

    def configure_optimizers(self) -> Any:
        params: Any = self.net.parameters()
        if self.layer_decay is not None:
            params = layer_decay_groups(self.net, self.layer_decay, self.optimizer_factory)
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"},
        }
