"""Model layer: Table 4 shapes, size limits, registry, baselines, local weights, bf16."""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from fus2net.models import Fus2Net, create_model, list_models, model_layout, regularized_weight
from fus2net.models.fus2net import GridAvgPool, InceptionResNetA, feature_map_size

# Configs that start from downloaded weights are built in test_pretrained.py, from a filled cache.
MODEL_CONFIGS = [
    path
    for path in sorted((Path(__file__).parents[1] / "conf" / "model").glob("*.yaml"))
    if not OmegaConf.load(path).get("pretrained")
]
BASELINES = ["densenet121", "efficientnet_b0", "googlenet", "resnet18"]

# Table 4, (channels, height, width) after each row, for a 299x299 input.
TABLE4_SHAPES = {
    "stem.conv1": (32, 149, 149),
    "stem.conv2": (32, 147, 147),
    "stem.conv3": (64, 147, 147),
    "block1.module1": (160, 73, 73),
    "block1.module2": (192, 71, 71),
    "block1.module3": (384, 35, 35),
    "block2": (384, 35, 35),
    "head.pool": (384, 4, 4),
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_registry_lists_all_models_and_rejects_unknown_names() -> None:
    assert list_models() == sorted(["fus2net", *BASELINES])
    with pytest.raises(ValueError, match=r"unknown model 'fusnet'.*fus2net.*googlenet"):
        create_model("fusnet")


def test_fus2net_follows_table4_shapes_at_299px() -> None:
    model = Fus2Net().eval()
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(_module, _inputs, output: torch.Tensor) -> None:
            seen[name] = tuple(output.shape)

        return hook

    for name in TABLE4_SHAPES:
        model.get_submodule(name).register_forward_hook(record(name))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 299, 299))
    assert seen == {name: (2, *shape) for name, shape in TABLE4_SHAPES.items()}
    assert logits.shape == (2, 2)


@pytest.mark.parametrize("size", [51, 96, 128, 160])
def test_fus2net_runs_on_small_grayscale_inputs(size: int) -> None:
    model = Fus2Net(in_chans=1, num_classes=2).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 1, size, size))
        logits = model.forward_head(features)
    side = feature_map_size(size)
    assert features.shape == (1, 384, side, side)
    assert logits.shape == (1, 2)


@pytest.mark.parametrize(("pool", "minimum"), [("auto", 51), ("adaptive", 51), ("avg8", 275)])
def test_fus2net_minimum_input_size_is_exact(pool: str, minimum: int) -> None:
    model = Fus2Net(pool=pool).eval()
    assert model.min_input_size == minimum
    with torch.no_grad():
        assert model(torch.randn(1, 3, minimum, minimum)).shape == (1, 2)
        with pytest.raises(ValueError, match=rf"smaller than the minimum {minimum}x{minimum}.*"):
            model(torch.randn(1, 3, minimum, minimum - 1))


def test_avg8_pool_rejects_maps_it_cannot_turn_into_4x4() -> None:
    with pytest.raises(ValueError, match=r"model\.pool=auto"):
        GridAvgPool("avg8")(torch.randn(1, 8, 40, 40))
    with pytest.raises(ValueError, match="is not one of"):
        GridAvgPool("max")  # type: ignore[arg-type]


def test_auto_pool_uses_the_paper_window_at_35px_and_adaptive_elsewhere() -> None:
    paper_map, small_map = torch.randn(2, 8, 35, 35), torch.randn(2, 8, 13, 13)
    auto = GridAvgPool("auto")
    torch.testing.assert_close(auto(paper_map), F.avg_pool2d(paper_map, 8, stride=8))
    torch.testing.assert_close(auto(small_map), F.adaptive_avg_pool2d(small_map, 4))
    assert not torch.allclose(GridAvgPool("adaptive")(paper_map), auto(paper_map))


def test_residual_block_applies_bn_relu_after_the_scaled_addition() -> None:
    block = InceptionResNetA(384, scale=0.0).eval()
    x = torch.randn(1, 384, 7, 7)
    torch.testing.assert_close(block(x), torch.relu(block.bn(x)))
    block.scale = 0.17
    assert not torch.allclose(block(x), torch.relu(block.bn(x)))


def test_fus2net_head_and_regularized_weight() -> None:
    model = Fus2Net(hidden_dim=64, num_classes=3, drop_rate=0.25).eval()
    features = torch.randn(2, 384, 35, 35)
    assert model.forward_head(features, pre_logits=True).shape == (2, 64)
    assert model.forward_head(features).shape == (2, 3)
    assert model.head.drop.p == 0.25
    assert model.regularized_weight is model.head.hidden.weight
    assert model.regularized_weight.shape == (64, 384 * 4 * 4)
    # Table 4's convolutions fix the trunk: 744,064 parameters whatever the head.
    trunk = [p for name, p in model.named_parameters() if not name.startswith("head.")]
    assert sum(p.numel() for p in trunk) == 744_064


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda path: path.stem)
def test_every_model_config_builds_a_working_grayscale_model(config: Path) -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(config))
    assert config.stem in (cfg["name"], cfg.get("source"))  # model=timm: the source
    assert not {"in_chans", "num_classes", "drop_rate"} & set(cfg), "the trainer sets these"
    model = create_model(**cfg, in_chans=1, num_classes=3, drop_rate=0.5).eval()
    layout = model_layout(model)
    assert layout is not None
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 3)
        size = layout.min_input_size - 1
        with pytest.raises(ValueError, match=r"set data\.image_size >="):
            model(torch.randn(1, 1, size, size))
    weight = regularized_weight(model)
    assert any(weight is p for p in model.parameters())
    assert weight.shape[0] == cfg.get("hidden_dim", 3)  # the head, or Fus2Net's hidden layer


@pytest.mark.parametrize(
    ("name", "dropout"), [("googlenet", "dropout"), ("efficientnet_b0", "classifier.0")]
)
def test_baseline_drop_rate_reaches_the_classifier_dropout(name: str, dropout: str) -> None:
    model = create_model(name, drop_rate=0.5)
    assert model.get_submodule(dropout).p == 0.5


# Per baseline at in_chans=1, num_classes=2: first conv name and weight shape, classifier name,
# number of state-dict tensors, and the first 16 hex digits of the sha256 of its "key:shape"
# lines. A change here breaks every checkpoint saved before it.
BASELINE_STATE_DICTS = {
    "densenet121": ("features.conv0", (64, 1, 7, 7), "classifier", 727, "a666006be13adda6"),
    "efficientnet_b0": ("features.0.0", (32, 1, 3, 3), "classifier", 360, "7b6b719ccf003fab"),
    "googlenet": ("conv1.conv", (64, 1, 7, 7), "fc", 344, "46ada5f88ec289de"),
    "resnet18": ("conv1", (64, 1, 7, 7), "fc", 122, "83ec4555e1417393"),
}


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_state_dict_keys_and_adapted_shapes_stay_fixed(name: str) -> None:
    conv_name, conv_shape, classifier, n_keys, digest = BASELINE_STATE_DICTS[name]
    model = create_model(name, in_chans=1, num_classes=2)
    state_dict = model.state_dict()
    lines = "\n".join(f"{key}:{tuple(value.shape)}" for key, value in state_dict.items())
    assert len(state_dict) == n_keys
    assert hashlib.sha256(lines.encode()).hexdigest()[:16] == digest
    layout = model_layout(model)
    assert layout is not None and (layout.first_conv, layout.classifier) == (conv_name, classifier)
    conv = model.get_submodule(conv_name)
    assert conv.in_channels == 1 and tuple(state_dict[f"{conv_name}.weight"].shape) == conv_shape
    linears = [m for m in model.get_submodule(classifier).modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [2]
    assert regularized_weight(model) is linears[0].weight
    # An RGB checkpoint differs only in the first conv's weight, which load_pretrained skips.
    rgb = create_model(name, in_chans=3, num_classes=2).state_dict()
    assert list(rgb) == list(state_dict)
    assert [k for k in rgb if rgb[k].shape != state_dict[k].shape] == [f"{conv_name}.weight"]


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_pickle_whole(name: str) -> None:
    model = create_model(name, in_chans=1).eval()
    clone = pickle.loads(pickle.dumps(model))
    assert type(clone) is type(model) and model_layout(clone) is not None
    assert model_layout(clone) == model_layout(model)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))
        with pytest.raises(ValueError, match=r"set data\.image_size >= 32"):
            clone(torch.randn(1, 1, 31, 31))  # the input-size guard travels with it


def test_googlenet_has_no_auxiliary_classifiers() -> None:
    model = create_model("googlenet")
    assert model.aux1 is None and model.aux2 is None


def test_grayscale_first_conv_sums_the_rgb_kernel() -> None:
    torch.manual_seed(1)
    rgb = create_model("resnet18").conv1.weight
    torch.manual_seed(1)
    gray = create_model("resnet18", in_chans=1).conv1.weight
    torch.testing.assert_close(gray, rgb.sum(dim=1, keepdim=True))


def test_pretrained_path_restores_saved_weights(tmp_path: Path) -> None:
    source = create_model("fus2net", hidden_dim=32)
    path = tmp_path / "fus2net.pt"
    torch.save(source.state_dict(), path)
    loaded = create_model("fus2net", hidden_dim=32, pretrained_path=str(path))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)


def test_pretrained_path_accepts_lightning_checkpoints_and_skips_new_head(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = create_model("fus2net", hidden_dim=32, num_classes=3)
    path = tmp_path / "last.ckpt"
    state_dict = {f"model.{key}": value for key, value in source.state_dict().items()}
    torch.save({"state_dict": state_dict, "epoch": 3}, path)
    with caplog.at_level(logging.INFO, logger="fus2net.models.registry"):
        loaded = create_model("fus2net", hidden_dim=32, num_classes=2, pretrained_path=path)
    assert "head.fc.weight" in caplog.text and "head.fc.bias" in caplog.text
    torch.testing.assert_close(loaded.regularized_weight, source.regularized_weight)
    assert loaded.head.fc.weight.shape == (2, 32)


def test_pretrained_path_skips_first_conv_of_other_channel_count(tmp_path: Path) -> None:
    source = create_model("resnet18")
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    loaded = create_model("resnet18", in_chans=1, pretrained_path=path)
    assert loaded.conv1.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(loaded.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_pretrained_path_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"pretrained_path=.*does not exist"):
        create_model("fus2net", pretrained_path=tmp_path / "missing.pt")
    other = tmp_path / "resnet18.pt"
    torch.save(create_model("resnet18").state_dict(), other)
    with pytest.raises(ValueError, match="does not fit Fus2Net: missing stem"):
        create_model("fus2net", pretrained_path=other)


def test_fus2net_runs_channels_last_under_cpu_bf16_autocast() -> None:
    model = Fus2Net().eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 96, 96).to(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), reference, atol=0.1, rtol=0.1)
