"""`cv.checkpoint=best`: a fold keeps the weights of its best validation AUC (Lightning's own
ModelCheckpoint), `last` the weights of its last epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from fus2net.config.factories import train_fold
from fus2net.training.fold import FitRun, FoldData, quiet_lightning
from fus2net.training.module import BUSClassifier
from jobs import compose_train


class Snapshots(Callback):
    """The weights and validation AUC after every validation (what `best` must pick from)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, dict[str, torch.Tensor]]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and "auc/val" in trainer.callback_metrics:
            state = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}
            self.seen.append((float(trainer.callback_metrics["auc/val"]), state))


def _fit(
    tmp_path: Path, checkpoint: str, epochs: int = 4
) -> tuple[dict[str, torch.Tensor], Snapshots]:
    cfg = compose_train(
        "data.image_size=64",
        "data.batch_size=8",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
        "trainer.compile=false",
        f"cv.checkpoint={checkpoint}",
        "augmentation=none",
        "balance=none",
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(48, 64, 64, 3), dtype=np.uint8)
    labels = np.array([0, 1] * 24)
    dark = images[labels == 1, 20:44, 20:44]
    images[labels == 1, 20:44, 20:44] = dark - dark // 8  # a faint square: learnable, slowly
    idx = np.arange(48)
    data = FoldData(images, labels, idx[:32], idx[32:44], idx[44:])
    snapshots = Snapshots()
    quiet_lightning()
    result = train_fold(
        cfg,
        data,
        seed=0,
        num_classes=2,
        run=FitRun(
            tmp_path / checkpoint,
            checkpoint_dir=tmp_path / checkpoint / "checkpoints",
            callbacks=[snapshots],
        ),
    )
    return torch.load(result.weights, weights_only=True), snapshots


def test_best_keeps_the_weights_of_the_best_validation_auc(tmp_path: Path) -> None:
    saved, snapshots = _fit(tmp_path, "best")
    aucs = [auc for auc, _ in snapshots.seen]
    assert len(aucs) == 4
    best = snapshots.seen[int(np.argmax(aucs))][1]  # the first of equal bests, as Lightning
    assert all(torch.equal(saved[k], best[k]) for k in best)


def test_last_keeps_the_weights_of_the_last_epoch(tmp_path: Path) -> None:
    saved, snapshots = _fit(tmp_path, "last")
    last = snapshots.seen[-1][1]
    assert all(torch.equal(saved[k], last[k]) for k in last)


def test_last_ckpt_holds_this_epochs_best_for_a_resumed_fold(tmp_path: Path) -> None:
    """What a resumed fold restores: last.ckpt must carry the best score including the epoch
    it was written after, or a later, worse epoch could overwrite best.ckpt."""
    _, snapshots = _fit(tmp_path, "best", epochs=2)
    last = torch.load(tmp_path / "best" / "checkpoints" / "last.ckpt", weights_only=False)
    states = [s for k, s in last["callbacks"].items() if "auc/val" in k]
    assert len(states) == 1
    assert float(states[0]["best_model_score"]) == max(auc for auc, _ in snapshots.seen)


def test_a_last_ckpt_written_under_the_old_monitor_name_resumes_with_its_best_score() -> None:
    """A fold interrupted before `val/auc` became `auc/val`: Lightning finds the best
    checkpoint's state by its monitor's name, so the old key is moved to the new one."""
    old = ModelCheckpoint(monitor="val/auc", mode="max", save_top_k=1)
    new = ModelCheckpoint(monitor="auc/val", mode="max", save_top_k=1)
    state = {"monitor": "val/auc", "best_model_score": torch.tensor(0.8)}
    last = ModelCheckpoint(save_top_k=1)
    checkpoint = {"callbacks": {old.state_key: state, last.state_key: {"monitor": None}}}
    BUSClassifier.on_load_checkpoint(None, checkpoint)  # type: ignore[arg-type]
    assert set(checkpoint["callbacks"]) == {new.state_key, last.state_key}
    assert checkpoint["callbacks"][new.state_key]["monitor"] == "auc/val"
    assert checkpoint["callbacks"][new.state_key]["best_model_score"] is state["best_model_score"]
