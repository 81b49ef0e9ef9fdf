"""Units of the workflow: config composition, cell key, L2 term, metrics, tracking guards."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from fus2net.cli import config_dir
from fus2net.config.factories import resolved_container
from fus2net.config.preflight import ConfigError, check_config
from fus2net.config.validate import validate_config
from fus2net.evaluation.metrics import binary_metrics, mean_std
from fus2net.models import create_model
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.provenance import (
    KEYED_ONLY_WHEN_SET,
    _is_result_key,
    cell_key,
    flatten,
    is_evaluation_only,
    legacy_cell_key,
)
from fus2net.tracking.uris import TrackingError, redact_uri
from fus2net.training.module import BUSClassifier, epoch_metrics, undefined_rates
from jobs import compose_train


def _config(*overrides: str) -> dict:
    """The resolved config the cell key is made of, with `overrides`."""
    return resolved_container(compose_train(*overrides))


@pytest.mark.parametrize(
    ("name", "cls", "expected"),
    [
        ("adam", torch.optim.Adam, {"lr": 1e-3, "eps": 1e-7, "betas": (0.9, 0.999)}),
        ("rmsprop", torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7}),
        ("sgd", torch.optim.SGD, {"lr": 0.01, "momentum": 0.0}),
    ],
)
def test_optimizers_use_keras_defaults(name: str, cls: type, expected: dict) -> None:
    cfg = compose_train(f"optimizer={name}")
    optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, cls)
    for key, value in expected.items():
        got = optimizer.defaults[key]
        assert tuple(got) == value if isinstance(value, tuple) else got == pytest.approx(value)


def test_every_experiment_preset_composes() -> None:
    presets = sorted(Path(config_dir(), "experiment").glob("*.yaml"))
    for preset in presets:
        cfg = compose_train(f"experiment={preset.stem}")
        validate_config(cfg)
        check_config(cfg)
        if not preset.stem.startswith("paper"):  # the project's own recipe: CPU-sized
            crop = cfg.model.get("lesion_crop")  # the network's input: the crop, if any
            assert (crop.crop_size if crop else cfg.data.image_size) <= 160 and cfg.cv.folds == 5
            continue
        assert cfg.data.image_size == 299 and cfg.cv.folds == 10
        assert cfg.trainer.max_epochs == 53 and list(cfg.data.test.per_class) == [50, 50]
        assert cfg.regularization.l2 == 0.05 and cfg.regularization.dropout == 0.5


def test_cell_key_ignores_fold_and_tracking_but_not_hyperparameters() -> None:
    base = cell_key(_config())
    assert base == cell_key(_config("cv.fold=1", "tracking.experiment=other"))
    assert base == cell_key(_config("data.num_workers=2", "paths.root=/elsewhere"))
    assert base == cell_key(_config("trainer.compile=false", "trainer.threads=1"))
    assert base != cell_key(_config(), dataset_fingerprint="other data")
    assert base != cell_key(_config("optimizer.lr=0.0005"))
    assert base != cell_key(_config("optimizer=sgd"))
    assert base != cell_key(_config("cv.folds=10"))


# The keys these configs had when issue 26 moved the config out of the lower layers: a stored
# cell is found again only while the same config gives the same key (change one only with a
# reason that every stored cell of it may be trained again).
PINNED_KEYS = {
    (): "8488d71ceea6925d",
    ("experiment=improved",): "aae7393205707356",
    ("experiment=transfer",): "c8289970b748945e",  # lesion crops joined (issue 23)
    ("experiment=transfer", "~lesion_crop", "data.image_size=160"): "ae1022185dbd6458",  # before
    ("experiment=paper",): "51ea30517ce0cb5c",
    ("dataset=busi_breast",): "7a85a95333315b77",
    ("evaluation.tta=hflip", "data.resize=pad"): "34734252f38f81c3",
    ("model=resnet18", "optimizer=sgd"): "5c127af6f3346e0a",
}


def test_the_cell_keys_of_todays_configs_stay_as_they_are() -> None:
    for overrides, key in PINNED_KEYS.items():
        assert cell_key(_config(*overrides), "f") == key, overrides
    assert cell_key(_config()) == "fd53402cf0c7f842"  # no dataset fingerprint
    external = _config("+dataset@eval_datasets.busbra=busbra")
    assert cell_key(external, "f") == PINNED_KEYS[()]  # evaluation-only: not keyed
    assert legacy_cell_key(external, "f") == "e43bb3f99ee0b76c"
    assert legacy_cell_key(_config(), "f") == PINNED_KEYS[()]


def test_cells_keyed_while_compile_was_a_result_key_keep_their_keys() -> None:
    """Cells trained before `trainer.compile` left the key (all eager, `false`) are found again."""
    cfg = compose_train("experiment=improved", "trainer.compile=false")
    flat = flatten(resolved_container(cfg))
    flat["dataset.fingerprint"] = "data"
    kept = {
        k: v
        for k, v in flat.items()
        if k == "trainer.compile" or _is_result_key(k) or is_evaluation_only(k)
    }  # evaluation-only keys were result keys then, as they are hashed now: at their defaults
    for key, default in KEYED_ONLY_WHEN_SET.items():  # keys added later, at their defaults
        if kept.get(key) == default:
            del kept[key]
    former = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()
    assert cell_key(resolved_container(cfg), "data") == former[:16]
    assert cell_key(_config("experiment=improved", "trainer.compile=true"), "data") == former[:16]


def test_cell_key_of_a_pool_ignores_where_its_members_are_but_not_their_options() -> None:
    pool = cell_key(_config("dataset=busi_breast"))
    assert pool == cell_key(_config("dataset=busi_breast", "dataset.members.busi.root=/x"))
    assert pool != cell_key(
        _config("dataset=busi_breast", "dataset.members.busi.classes=[benign,malignant,normal]")
    )


def test_check_config_lists_every_problem() -> None:
    cfg = compose_train(
        "data.channels=2", "cv.folds=1", "data.image_size=40", "evaluation.calibration=isotonic"
    )
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)  # the typed schema, which runs before check_config
    text = str(err.value)
    assert "data.channels=2" in text and "cv.folds=1" in text
    assert "evaluation.calibration=isotonic: must be one of platt, temperature, none" in text


def test_image_size_below_model_minimum_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"data\.image_size=40"):
        check_config(compose_train("data.image_size=40"))


def test_l2_is_the_keras_sum_of_squares_on_the_first_dense_kernel() -> None:
    cfg = compose_train()
    net = create_model(**dict(cfg.model), in_chans=3, num_classes=2, drop_rate=0.0)
    module = BUSClassifier(net, instantiate(cfg.optimizer), l2=0.05)
    kernel = module.net.regularized_weight
    assert module.l2_penalty().item() == pytest.approx(0.05 * kernel.pow(2).sum().item(), rel=1e-5)
    module.train()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    logits = module(x)
    ce = torch.nn.functional.cross_entropy(logits, y)
    loss = module._shared_step((x, y), "train")
    assert loss.item() == pytest.approx(ce.item() + module.l2_penalty().item(), rel=1e-4)


def test_binary_metrics_match_hand_counts() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    probs = np.array([0.9, 0.6, 0.2, 0.1, 0.4, 0.7, 0.3])
    m = binary_metrics(labels, probs)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["auc"] == pytest.approx(8 / 12)  # 8 of 12 malignant/benign pairs ranked right
    assert math.isnan(binary_metrics(np.zeros(3), np.ones(3) * 0.2)["auc"])
    agg = mean_std([{"auc": 0.8}, {"auc": 0.9}])
    assert agg["auc_mean"] == pytest.approx(0.85) and agg["auc_std"] == pytest.approx(0.0707, 1e-3)


def test_flatten_and_redaction() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}}) == {"a.b": 1, "a.c": "[1, 2]"}
    assert redact_uri("postgresql://user:secret@db:5432/mlflow") == (
        "postgresql://user:***@db:5432/mlflow"
    )
    assert "secret" not in redact_uri("tracking.uri=http://bob:secret@host:5000")


def test_plain_folder_store_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match="tracking=local"):
        MlflowTracker(str(tmp_path / "mlruns"), "x")


def test_unreachable_store_is_a_tracking_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TrackingError, match="opening the experiment"):
        MlflowTracker(f"sqlite:///{blocker}/sub/mlflow.db", "x")


def test_losing_the_race_to_create_the_experiment_uses_the_winners(tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    winner = MlflowTracker(uri, "raced")
    real = MlflowClient.get_experiment_by_name
    calls = []

    def not_there_yet(self, name):  # what a parallel job saw just before the winner created it
        calls.append(name)
        return None if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", not_there_yet)
    loser = MlflowTracker(uri, "raced")
    assert loser.experiment_id == winner.experiment_id and len(calls) == 2


def test_an_epoch_without_a_malignant_image_logs_no_sensitivity_rather_than_zero() -> None:
    metrics = epoch_metrics("val")
    metrics.update(torch.tensor([0.2, 0.7, 0.4]), torch.tensor([0, 0, 0]))
    assert metrics.compute()["sensitivity/val"] == 0.0  # what torchmetrics would have logged
    assert undefined_rates(metrics) == {"sensitivity"}
    metrics.reset()
    metrics.update(torch.tensor([0.2, 0.3, 0.9]), torch.tensor([0, 1, 1]))
    assert undefined_rates(metrics) == set()
    metrics.reset()
    metrics.update(torch.tensor([0.2, 0.3, 0.4]), torch.tensor([0, 1, 0]))
    assert undefined_rates(metrics) == {"precision"}  # no malignant call
