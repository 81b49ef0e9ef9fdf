"""Horizontal-flip test-time augmentation (`evaluation.tta=hflip`): the same score in the fold's
predictions, in a saved model, and in the cell key only when it is asked for."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fus2net.config import groups as config_groups
from fus2net.config.factories import resolved_container
from fus2net.config.messages import choices
from fus2net.config.validate import config_problems
from fus2net.inference.loading import LoadedModel
from fus2net.inference.spec import Member, ModelSpec
from fus2net.inference.tta import TTA_MODES, malignant_probability
from fus2net.models import create_model
from fus2net.tracking.provenance import (
    KEYED_ONLY_WHEN_SET,
    _is_result_key,
    cell_key,
    flatten,
    is_evaluation_only,
)
from fus2net.training.module import BUSClassifier
from jobs import compose_train


class LeftHalf(nn.Module):
    """A network that sees only the left half of the image: mirroring changes what it says."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(left), 4 * left], dim=1)


def _softmax1(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=1)[:, 1]


def test_hflip_is_the_mean_over_the_image_and_its_mirror() -> None:
    net = LeftHalf()
    x = torch.randn(5, 1, 8, 8)
    plain = malignant_probability(net, x)
    assert torch.allclose(plain, _softmax1(net(x)))
    both = malignant_probability(net, x, "hflip")
    assert torch.allclose(both, (_softmax1(net(x)) + _softmax1(net(x.flip(-1)))) / 2)
    assert not torch.allclose(both, plain)  # the mirror was scored, not the image twice
    with pytest.raises(ValueError, match="none, hflip"):
        malignant_probability(net, x, "vflip")


def test_the_module_predicts_with_its_tta_and_refuses_an_unknown_one() -> None:
    module = BUSClassifier(
        create_model("fus2net", in_chans=1, num_classes=2), torch.optim.Adam, tta="hflip"
    )
    module.eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        out = module.predict_step((x, torch.zeros(3, dtype=torch.long), torch.arange(3)), 0)
        expected = (_softmax1(module(x)) + _softmax1(module(x.flip(-1)))) / 2
    assert torch.allclose(out["prob"], expected, atol=1e-6)
    assert module.hparams["tta"] == "hflip"
    with pytest.raises(ValueError, match=r"evaluation\.tta='vflip'"):
        BUSClassifier(create_model("fus2net", num_classes=2), torch.optim.Adam, tta="vflip")


def _loaded(tta: str) -> LoadedModel:
    spec = ModelSpec(
        model={"name": "left_half"},
        in_chans=1,
        image_size=8,
        class_names=["benign", "malignant"],
        members=[Member("fold_1/model.pt", 1)],
        tta=tta,
    )
    return LoadedModel(spec=spec, members=[LeftHalf()], cam_layers=[], origin="test")


def test_a_saved_model_scores_with_the_tta_it_was_trained_with(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8, 1), dtype=np.uint8)
    plain = _loaded("none")
    mirrored = plain.probabilities(np.ascontiguousarray(images[:, :, ::-1]))
    expected = (plain.probabilities(images) + mirrored) / 2
    assert np.allclose(_loaded("hflip").probabilities(images), expected, atol=1e-6)
    assert not np.allclose(expected, plain.probabilities(images))

    spec = _loaded("hflip").spec
    assert ModelSpec.read(spec.write(tmp_path / "a")).tta == "hflip"
    older = json.loads((tmp_path / "a" / "fus2net_model.json").read_text())
    del older["tta"]  # a model saved before the key existed scores as it did
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "fus2net_model.json").write_text(json.dumps(older))
    assert ModelSpec.read(tmp_path / "b" / "fus2net_model.json").tta == "none"


def test_tta_enters_the_cell_key_only_when_it_is_set() -> None:
    """Cells keyed before `evaluation.tta` existed keep their keys; `hflip` is a new cell."""
    cfg = compose_train("experiment=improved", "evaluation.tta=none")
    flat = flatten(resolved_container(cfg))
    flat["dataset.fingerprint"] = "data"
    # evaluation-only keys were result keys then, as they are hashed now: at their defaults
    kept = {k: v for k, v in flat.items() if _is_result_key(k) or is_evaluation_only(k)}
    for key in KEYED_ONLY_WHEN_SET:  # evaluation.tta, and the keys added later, at their defaults
        kept.pop(key, None)  # (model.pretrained_source exists in timm model configs only)
    kept["trainer.compile"] = False  # provenance.KEYED_AT_FORMER_VALUE
    former = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()
    assert cell_key(resolved_container(cfg), "data") == former[:16]
    hflip = compose_train("experiment=improved")  # the preset's
    assert hflip.evaluation.tta == "hflip" and config_problems(hflip) == []
    assert cell_key(resolved_container(hflip), "data") != former[:16]


def test_the_schema_names_the_choices() -> None:
    assert choices(config_groups.Evaluation.model_fields["tta"]) == list(TTA_MODES)
    (problem,) = config_problems(compose_train("evaluation.tta=vflip"))
    assert "evaluation.tta=vflip" in problem and "hflip" in problem
