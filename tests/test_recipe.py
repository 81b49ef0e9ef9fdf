"""The pieces of `experiment=improved`: warmup + cosine, AdamW, label smoothing, EMA weights."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from fus2net.inference.spec import ModelSpec
from fus2net.models import create_model
from fus2net.training.module import BUSClassifier
from fus2net.training.schedules import warmup_cosine
from jobs import run_train, sqlite_client, tiny


def _rates(epochs: int, **options) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = warmup_cosine(optimizer, max_epochs=epochs, **options)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_then_cosine_to_the_floor() -> None:
    rates = _rates(10, warmup_epochs=2, min_lr_ratio=0.01)
    assert rates[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert rates[-1] == pytest.approx(0.01)
    assert all(a >= b for a, b in itertools.pairwise(rates[2:]))  # decays after the warmup
    with pytest.raises(ValueError, match="warmup_epochs"):
        _rates(3, warmup_epochs=3)


def test_label_smoothing_reaches_the_loss() -> None:
    net = create_model("resnet18", in_chans=3, num_classes=2, drop_rate=0.0)
    module = BUSClassifier(net, optimizer=torch.optim.Adam, label_smoothing=0.1)
    assert module.criterion.label_smoothing == 0.1


def test_improved_recipe_runs_and_logs_its_schedule(tmp_path: Path) -> None:
    """The preset through the real entry point (tiny): AdamW, the warmup-cosine rates per epoch
    in train/lr, label smoothing and EMA weights when asked, and the preset's flip TTA; the cell
    finishes and its saved model scores with the TTA it was validated with."""
    args = tiny(
        "experiment=improved",
        "trainer.max_epochs=3",
        "scheduler.warmup_epochs=1",
        "regularization.ema_decay=0.99",
        "regularization.label_smoothing=0.1",
        "data.image_size=80",
    )
    run_train(args, tmp_path)
    client = sqlite_client(tmp_path)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`fus2net.role` = 'fold'"
    )
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    history = client.get_metric_history(runs[0].info.run_id, "lr")
    rates = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert rates == pytest.approx([0.0005, 0.001, 0.00001])
    params = runs[0].data.params
    assert params["optimizer._target_"] == "torch.optim.AdamW"
    assert params["regularization.ema_decay"] == "0.99"  # EMA, off in the preset, still works
    assert params["regularization.label_smoothing"] == "0.1"  # off in the preset, still works
    assert params["evaluation.tta"] == "hflip"  # the preset's
    (spec,) = (tmp_path / "outputs").glob("*/*/fus2net_model.json")
    assert ModelSpec.read(spec).tta == "hflip"


def test_layer_decay_lowers_the_rate_layer_by_layer_from_the_classifier_down() -> None:
    """`regularization.layer_decay` on a timm backbone: every parameter in exactly one group, the
    classifier at the optimiser's rate, the stem at the lowest, each layer `decay` times the one
    above; the warmup-cosine schedule scales every group alike. A network without timm's layers
    is refused by name."""
    from functools import partial

    module = BUSClassifier(
        create_model("tf_efficientnet_lite0", source="timm", pretrained=False, num_classes=2),
        optimizer=partial(torch.optim.AdamW, lr=0.002, weight_decay=0.05),
        scheduler=partial(warmup_cosine, max_epochs=4, warmup_epochs=1),
        layer_decay=0.8,
    )
    config = module.configure_optimizers()
    optimizer = config["optimizer"]
    groups = optimizer.param_groups
    assert sum(len(g["params"]) for g in groups) == len(list(module.net.parameters()))
    assert len({id(p) for g in groups for p in g["params"]}) == len(list(module.net.parameters()))
    head = {id(p) for p in module.net.get_classifier().parameters()}
    stem = {id(p) for p in module.net.conv_stem.parameters()}
    rate = {id(p): g["initial_lr"] for g in groups for p in g["params"]}  # before warmup
    assert [rate[i] for i in head] == pytest.approx([0.002] * len(head))
    assert max(rate[i] for i in stem) == pytest.approx(min(rate.values()))
    levels = sorted({round(r / 0.002, 6) for r in rate.values()}, reverse=True)
    assert all(b / a == pytest.approx(0.8, rel=1e-4) for a, b in itertools.pairwise(levels))
    assert all(g["weight_decay"] == 0.05 for g in groups)  # the optimiser's, unchanged
    before = [g["lr"] for g in groups]
    optimizer.step()
    config["lr_scheduler"]["scheduler"].step()
    after = [g["lr"] for g in groups]
    assert [a / b for a, b in zip(after, before, strict=True)] == pytest.approx([2.0] * len(before))
    plain = BUSClassifier(
        create_model("fus2net", num_classes=2),
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        layer_decay=0.8,
    )
    with pytest.raises(ValueError, match=r"regularization\.layer_decay"):
        plain.configure_optimizers()
