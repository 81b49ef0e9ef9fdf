"""Grad-CAM and the localisation score: saliency maps against lesion masks."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from torch import nn

from fus2net.clinical.plots import save_overlay_grid
from fus2net.evaluation.localization import (
    cam_energy_in_mask,
    localization_scores,
    pointing_game_hit,
)
from fus2net.images.imageio import resized_mask
from fus2net.inference.gradcam import ensemble_grad_cam, find_cam_layer, grad_cam, overlay
from fus2net.models import create_model
from fus2net.synthetic.render import render_case


def square_mask(size: int = 32, top: int = 8, side: int = 8) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, top : top + side] = True
    return mask


def test_energy_and_pointing_inside_outside_uniform_and_empty() -> None:
    mask = square_mask()
    inside = mask.astype(float)
    outside = (~mask).astype(float)
    assert cam_energy_in_mask(inside, mask) == 1.0 and pointing_game_hit(inside, mask)
    assert cam_energy_in_mask(outside, mask) == 0.0
    uniform = np.full(mask.shape, 0.5)
    assert cam_energy_in_mask(uniform, mask) == pytest.approx(mask.mean())
    empty = np.zeros(mask.shape)
    assert math.isnan(cam_energy_in_mask(empty, mask)) and not pointing_game_hit(empty, mask)
    with pytest.raises(ValueError, match="differ in shape"):
        cam_energy_in_mask(np.zeros((4, 4)), mask)


def test_pointing_game_tolerance_dilates_the_mask() -> None:
    mask = square_mask()
    cam = np.zeros(mask.shape)
    cam[8, 18] = 1.0  # two pixels right of the square (columns 8..15)
    assert not pointing_game_hit(cam, mask)
    assert not pointing_game_hit(cam, mask, tolerance=2)  # column 17 is the dilated edge
    assert pointing_game_hit(cam, mask, tolerance=3)


def test_scores_skip_images_without_lesion_and_count_empty_maps() -> None:
    mask = square_mask()
    scores = localization_scores(
        [mask.astype(float), np.zeros(mask.shape), np.ones(mask.shape)],
        [mask, mask, np.zeros(mask.shape, bool)],
    )
    assert scores["n_images"] == 2 and scores["n_empty_cam"] == 1
    assert scores["cam_energy_in_mask"] == 1.0 and scores["pointing_game"] == 0.5
    assert localization_scores([], []) == {"n_images": 0.0}


def test_synthetic_lesion_mask_tells_lesion_attention_from_text_attention() -> None:
    """The synthetic images' masks make the score testable: a map on the lesion scores high,
    one on the bottom band (where burned-in text sits) scores at most chance."""
    image, mask = render_case(np.random.SeedSequence(3), malignant=True, size=96, overlap=0.3)
    assert image.shape == mask.shape and mask.any()
    on_lesion = gaussian_filter(mask.astype(float), 2)
    on_text = np.zeros(mask.shape)
    on_text[-12:, 10:60] = 1.0
    on_text[mask] = 0.0
    lesion = localization_scores([on_lesion], [mask])
    text = localization_scores([on_text], [mask])
    assert lesion["cam_energy_in_mask"] > 0.7 and lesion["pointing_game"] == 1.0
    assert text["cam_energy_in_mask"] == 0.0 and text["pointing_game"] == 0.0
    assert 0 < lesion["mask_area_fraction"] < 0.5


def test_resized_mask_is_a_square_union(tmp_path: Path) -> None:
    first = np.zeros((60, 90), np.uint8)
    first[10:20, 10:30] = 255
    second = np.zeros((60, 90), np.uint8)
    second[40:50, 60:80] = 255
    paths = []
    for i, array in enumerate((first, second)):
        paths.append(tmp_path / f"m{i}.png")
        Image.fromarray(array).save(paths[-1])
    mask = resized_mask(paths, 30)
    assert mask.shape == (30, 30) and mask.dtype == bool
    assert mask[5, 6] and mask[22, 23] and not mask[25, 2]
    assert not resized_mask([], 30).any()


def evidence_model() -> nn.Module:
    """Malignant logit = mean brightness of a 1x1-conv feature map: Grad-CAM must be the map."""
    model = nn.Sequential(
        OrderedDict(
            features=nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU()),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(1, 2, bias=False),
        )
    )
    with torch.no_grad():
        model.features[0].weight.fill_(1.0)
        model.fc.weight.copy_(torch.tensor([[-1.0], [1.0]]))
    return model


def test_grad_cam_highlights_the_evidence() -> None:
    model = evidence_model()
    mask = square_mask()
    x = torch.from_numpy(mask.astype(np.float32))[None, None].repeat(2, 1, 1, 1)
    assert find_cam_layer(model, 32, 1) == "features"
    cams = grad_cam(model, x, "features", target="malignant")
    assert cams.shape == (2, 32, 32) and cams.min() >= 0 and cams.max() <= 1
    assert cam_energy_in_mask(cams[0], mask) > 0.95 and pointing_game_hit(cams[0], mask)
    mean = ensemble_grad_cam([model, model], x, ["features", "features"], "malignant")
    assert mean == pytest.approx(cams, abs=1e-6)
    with pytest.raises(ValueError, match="not a submodule"):
        grad_cam(model, x, "nope")


@pytest.mark.parametrize(("name", "layer"), [("fus2net", "block2"), ("resnet18", "layer4")])
def test_cam_layer_found_for_registry_models(name: str, layer: str) -> None:
    model = create_model(name, in_chans=3, num_classes=2)
    assert find_cam_layer(model, 64, 3) == layer
    cams = grad_cam(model, torch.randn(1, 3, 64, 64), layer)
    assert cams.shape == (1, 64, 64) and np.all((cams >= 0) & (cams <= 1))


def test_overlay_and_grid(tmp_path: Path) -> None:
    gray = np.full((50, 70), 100, np.uint8)
    cam = np.zeros((20, 20), np.float32)
    cam[5:10, 5:10] = 1.0
    drawn = overlay(gray, cam)
    assert drawn.shape == (50, 70, 3) and drawn.dtype == np.uint8
    assert drawn[:, :, 0].max() > drawn[:, :, 0].min()  # the heat map shows
    rgb = np.zeros((32, 32, 3), np.uint8)
    path = save_overlay_grid(
        [rgb] * 3,
        [np.random.rand(32, 32)] * 3,
        ["a", "b", "c"],
        tmp_path / "g.png",
        masks=[square_mask(), None, square_mask()],
    )
    assert path.stat().st_size > 1000
