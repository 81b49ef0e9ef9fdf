"""Lesion-centred crops (`lesion_crop=segmenter`): the boxes, the crop, the frozen segmenter, its
training, its cache, Grad-CAM on the image, and a job through the real entry points."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fus2net.config.preflight import ConfigError
from fus2net.config.validate import validate_config
from fus2net.inference.gradcam import find_cam_layer, grad_cam
from fus2net.models import create_model
from fus2net.models.lesion_crop import LesionCropNet, LesionCropSettings, lesion_boxes
from fus2net.training.lesion_segmenter import segmenter_dice, train_segmenter
from jobs import compose_train, run_module, run_train, sqlite_client, tiny

LITE0 = {"name": "tf_efficientnet_lite0", "source": "timm", "pretrained": False}


def _net(**settings) -> LesionCropNet:
    net = create_model(**LITE0, in_chans=3, num_classes=2, lesion_crop=settings)
    assert isinstance(net, LesionCropNet)
    return net


def test_the_box_is_the_lesion_squared_and_widened_or_the_whole_image() -> None:
    p = torch.zeros(3, 1, 20, 20)
    p[0, 0, 4:8, 2:10] = 0.9  # 4 rows x 8 cols: side 0.4, centre (0.3, 0.3)
    p[1, 0, 0, 0] = 0.4  # under the threshold: no lesion found
    p[2, 0, 10, 10] = 0.6  # one pixel: widened to min_side
    boxes = lesion_boxes(p, threshold=0.5, margin=0.25, min_side=0.2)
    side = 0.4 * 1.5
    assert boxes[0].tolist() == pytest.approx(
        [0.3 - side / 2, 0.3 - side / 2, 0.3 + side / 2, 0.3 + side / 2]
    )
    assert boxes[1].tolist() == pytest.approx([0, 0, 1, 1])
    assert boxes[2].tolist() == pytest.approx([0.425, 0.425, 0.625, 0.625])


def test_the_crop_is_the_box_resized_and_zeros_past_the_edge(monkeypatch) -> None:
    net = _net(crop_size=32, seg_size=32)
    x = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64).repeat(2, 3, 1, 1)
    boxes = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.5, 0.5, 1.5, 1.5]])
    monkeypatch.setattr(net, "boxes", lambda _x: boxes)
    crops = net.crops(x)
    assert crops.shape == (2, 3, 32, 32)
    # a 32 px box of a 64 px image at 32 px is the region itself (roi_align samples pixel centres)
    assert torch.allclose(crops[0], x[0, :, 16:48, 16:48], atol=1e-3)
    assert torch.allclose(crops[1, :, :15, :15], x[1, :, 32:62, 32:62][:, ::2, ::2], rtol=0.02)
    assert (crops[1, :, 17:, 17:] == 0).all()  # past the image


def test_the_segmenter_stays_frozen_while_the_classifier_trains() -> None:
    net = _net(crop_size=64, seg_size=64).train()
    assert net.classifier.training and not net.segmenter.training
    assert not any(p.requires_grad for p in net.segmenter.parameters())
    before = {k: v.clone() for k, v in net.segmenter.state_dict().items()}
    net(torch.randn(4, 3, 96, 96)).sum().backward()
    assert all(p.grad is not None for p in net.classifier.parameters() if p.requires_grad)
    assert all(torch.equal(before[k], v) for k, v in net.segmenter.state_dict().items())
    # the project's layout is the classifier's: its L2 kernel, input conv and head
    assert net.regularized_weight is net.classifier.classifier.weight
    assert net.first_conv_name == "classifier.conv_stem"


def _squares(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bright squares on speckle, at random places and sizes: an easy segmentation."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    for image, mask in zip(images, masks, strict=True):
        side = rng.integers(size // 5, size // 2)
        top, left = rng.integers(0, size - side, 2)
        mask[top : top + side, left : left + side] = True
        image[mask] = 200
    return images, masks


def test_the_segmenter_learns_the_masks_it_is_shown() -> None:
    settings = LesionCropSettings(seg_size=64, epochs=8, lr=3e-3, batch_size=8, pretrained=False)
    images, masks = _squares(48, 64, seed=0)
    fit = train_segmenter(images, masks, settings, None, seed=0, progress=False)
    held_images, held_masks = _squares(16, 64, seed=1)
    net = _net(**settings.model_dump())
    untrained = segmenter_dice(net.segmenter, held_images, held_masks, settings, None)
    net.segmenter.load_state_dict(fit.state_dict)
    dice = segmenter_dice(net.segmenter, held_images, held_masks, settings, None)
    assert dice > 0.6 > untrained, (dice, untrained)
    # and its boxes sit on the squares it has never seen
    x = torch.from_numpy(np.stack([(im / 255).transpose(2, 0, 1) for im in held_images])).float()
    x = (x - x.mean()) / x.std()
    inside = 0
    for box, mask in zip(net.boxes(x), held_masks, strict=True):
        rows, cols = np.nonzero(mask)
        cy, cx = rows.mean() / 64, cols.mean() / 64
        inside += int(box[0] <= cx <= box[2] and box[1] <= cy <= box[3])
    assert inside >= 12


def test_no_mask_in_the_pool_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="no training image has a lesion mask"):
        train_segmenter(
            np.zeros((0, 32, 32, 3), np.uint8),
            np.zeros((0, 32, 32), bool),
            LesionCropSettings(),
            None,
            seed=0,
        )


def test_grad_cam_of_a_crop_lies_inside_its_box_on_the_image(monkeypatch) -> None:
    """The classifier's map of the crop, put where the crop is (a 64 px box of a 128 px image at
    crop_size 64: the map itself), zero elsewhere."""
    torch.manual_seed(0)
    net = _net(crop_size=64, seg_size=64).eval()
    monkeypatch.setattr(net, "boxes", lambda _x: torch.tensor([[0.5, 0.0, 1.0, 0.5]]))
    layer = find_cam_layer(net, 128, 3)
    assert layer.startswith("classifier.")
    x = torch.randn(1, 3, 128, 128)
    cam = grad_cam(net, x, layer)
    inner = grad_cam(net.classifier, net.crops(x), layer.removeprefix("classifier."))
    assert cam.shape == (1, 128, 128) and inner.max() > 0
    assert cam[0, 64:, :].max() == 0 and cam[0, :, :64].max() == 0  # outside the crop
    assert np.allclose(cam[0, :64, 64:], inner[0], atol=1e-6)


def test_the_config_group_composes_validates_and_names_a_bad_key() -> None:
    cfg = compose_train("experiment=improved", "lesion_crop=segmenter", "data.image_size=256")
    typed = validate_config(cfg)
    assert typed.model.lesion_crop.crop_size == 160
    assert cfg.model.name == "fus2net"  # any network can be cropped
    assert "lesion_crop" not in compose_train("experiment=improved").model  # off by default
    assert compose_train("experiment=transfer", "~lesion_crop").model.get("lesion_crop") is None
    hint = "unknown key model.lesion_crop.crop_sise; did you mean model.lesion_crop.crop_size?"
    with pytest.raises(ConfigError, match=re.escape(hint)):
        validate_config(compose_train("lesion_crop=segmenter", "+model.lesion_crop.crop_sise=9"))
    with pytest.raises(ConfigError, match=r"model\.lesion_crop\.margin=-1: must be a number >= 0"):
        validate_config(compose_train("lesion_crop=segmenter", "model.lesion_crop.margin=-1"))


def test_a_lesion_crop_job_trains_the_segmenter_once_and_its_model_predicts(
    tmp_path: Path,
) -> None:
    """Through the real entry points: the segmenter is trained on the pool once (a second cell
    on the same pool reuses the cache file), the stored ensemble is a LesionCropNet whose
    segmenter is the cached one, and fus2net-predict scores and draws with it."""
    crop = (
        "lesion_crop=segmenter",
        "model.lesion_crop.crop_size=64",
        "model.lesion_crop.seg_size=64",
        "model.lesion_crop.epochs=1",
        "model.lesion_crop.pretrained=false",
    )
    args = tiny(*crop, "evaluation.gradcam.n_images=4")
    external = (
        "+dataset@eval_datasets.ext=synthetic",
        f"eval_datasets.ext.root={tmp_path / 'ext'}",
        "eval_datasets.ext.n_images=16",
        "eval_datasets.ext.image_size=128",
        "eval_datasets.ext.seed=7",
    )
    first = run_train([*args, *external], tmp_path)
    (segmenter,) = (tmp_path / ".cache" / "fus2net" / "lesion_segmenters").glob("*.safetensors")
    assert "lesion segmenter: stored" in first.stderr + first.stdout
    # another cell on the same pool, another crop: the same segmenter
    second = run_train([*args, "trainer.max_epochs=2", "model.lesion_crop.margin=0.5"], tmp_path)
    assert f"lesion segmenter: reusing {segmenter}" in second.stderr + second.stdout
    client = sqlite_client(tmp_path)
    cells = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`fus2net.role` = 'cell'"
    )
    assert len(cells) == 2 and all(c.info.status == "FINISHED" for c in cells)
    assert cells[0].data.params["model.lesion_crop.crop_size"] == "64"
    # the external set ships masks: how the segmenter and its crops find its lesions
    (with_ext,) = [c for c in cells if "external/ext/auc" in c.data.metrics]
    metrics = with_ext.data.metrics
    found = {k.rsplit("/", 1)[1]: v for k, v in metrics.items() if "/lesion_crop/" in k}
    assert found["n_images"] == 16 and set(found) == {
        "dice", "found", "centre_in_crop", "mask_in_crop", "n_images"
    }  # fmt: skip
    assert all(0 <= found[k] <= 1 for k in ("dice", "found", "centre_in_crop", "mask_in_crop"))
    card = Path(client.download_artifacts(with_ext.info.run_id, "model_card.md", str(tmp_path)))
    assert "- ext, lesion-centred crops against its 16 lesion masks" in card.read_text()
    # the same images without their masks: refused before any run, the fix named
    no_masks = ("dataset=folder", f"dataset.root={tmp_path / 'data' / 'synthetic'}")
    drop = ["dataset.n_images", "dataset.image_size"]
    ids = [e.experiment_id for e in client.search_experiments()]
    runs_before = len(client.search_runs(ids))
    refused = run_train(
        tiny(*crop, *no_masks, "dataset.mask_suffix=null", drop=drop), tmp_path, check=False
    )
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "training images has a lesion mask" in said, said[-2000:]
    assert "'~lesion_crop' data.image_size=160" in said and "Traceback" not in said
    assert len(client.search_runs(ids)) == runs_before  # no run was started

    from safetensors.torch import load_file

    from fus2net.inference.loading import load_model

    model = load_model(cells[0].info.run_id, f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    stored = load_file(segmenter)
    for member in model.members:
        assert isinstance(member, LesionCropNet)
        assert all(torch.equal(member.segmenter.state_dict()[k], v) for k, v in stored.items())
    images = sorted((tmp_path / "data" / "synthetic" / "malignant").glob("*).png"))[:3]
    done = run_module(
        "fus2net.cli.predict",
        [cells[0].info.run_id, *map(str, images), "--out", str(tmp_path / "pred")],
        tmp_path,
    )
    assert "3 image(s) predicted" in done.stdout + done.stderr
    assert "on lesion-centred crops (64 px), 80 px" in done.stdout
    assert len(list((tmp_path / "pred" / "overlays").glob("*"))) == 3


def test_create_model_without_lesion_crop_is_the_plain_network() -> None:
    net = create_model(**LITE0, in_chans=3, num_classes=2)
    assert not isinstance(net, LesionCropNet)
    assert F.softmax(net(torch.randn(1, 3, 64, 64)), 1).shape == (1, 2)


def test_lesion_finding_scores_count_the_crop_that_holds_the_lesion() -> None:
    from fus2net.evaluation.localization import lesion_finding_scores

    mask = np.zeros((10, 10), dtype=bool)
    mask[2:4, 2:4] = True  # 4 pixels, centre (3, 3)
    exact, missed, empty = mask.copy(), np.zeros_like(mask), np.zeros_like(mask)
    missed[7:9, 7:9] = True
    boxes = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    scores = lesion_finding_scores([exact, missed, exact], boxes, [mask, mask, empty])
    assert scores["n_images"] == 2  # the image without a lesion in its mask is left out
    assert scores["dice"] == pytest.approx(0.5) and scores["found"] == 1.0
    assert scores["centre_in_crop"] == 0.5 and scores["mask_in_crop"] == pytest.approx(0.5)
    half = np.array([[0.0, 0.0, 0.3, 1.0]])  # x up to 3 px: the mask's columns 2 (2.5) only
    assert lesion_finding_scores([empty], half, [mask])["mask_in_crop"] == pytest.approx(0.5)
    assert lesion_finding_scores([empty], half, [mask])["found"] == 0.0
