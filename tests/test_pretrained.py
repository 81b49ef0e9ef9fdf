"""Pretrained starting weights: torchvision's ImageNet weights through its weights API and the
torch.hub cache, any timm network through timm and the Hugging Face cache, and the input
normalisation such weights expect. Every test fills the caches with weights it writes, so the
real loading code runs offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torchvision import models as tvm

from fus2net.data.transforms import normalize
from fus2net.models import (
    PretrainedWeightsUnavailable,
    create_model,
    input_normalization,
    model_layout,
    regularized_weight,
)
from fus2net.models.pretrained import torchvision_cache_file, torchvision_weights
from jobs import REPO, run_module, run_train, tiny, train_env

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FIRST_CONV = {
    "resnet18": "conv1",
    "googlenet": "conv1.conv",
    "densenet121": "features.conv0",
    "efficientnet_b0": "features.0.0",
}


def write_imagenet_file(name: str) -> dict[str, torch.Tensor]:
    """A torchvision-format ImageNet file for `name` where torch.hub looks ($TORCH_HOME)."""
    extra = {"aux_logits": True, "init_weights": True} if name == "googlenet" else {}
    state = tvm.get_model(name, weights=None, num_classes=1000, **extra).state_dict()
    file = torchvision_cache_file(torchvision_weights(name))
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, file)
    return state


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url: str, *args, **kwargs) -> None:
        raise urllib.error.URLError(f"no network in this test ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


@pytest.mark.parametrize("name", sorted(FIRST_CONV))
def test_torchvision_imagenet_weights_from_the_cache(torch_home: Path, name: str) -> None:
    state = write_imagenet_file(name)
    model = create_model(name, pretrained="imagenet", in_chans=1, num_classes=2, drop_rate=0.3)
    conv = FIRST_CONV[name]
    # the RGB kernel summed over its channels (one gray channel), everything else as loaded
    expected = state[f"{conv}.weight"].sum(dim=1, keepdim=True)
    assert torch.equal(model.get_submodule(conv).weight.detach(), expected)
    deepest = [k for k in model.state_dict() if k.endswith("running_mean")][-1]
    assert torch.equal(model.state_dict()[deepest], state[deepest])
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 2)
    assert regularized_weight(model).shape[0] in (2, 1024, 1280)  # a Linear of the head


def test_resnet18_imagenet_builds_from_the_cache(torch_home: Path) -> None:
    cfg = OmegaConf.load(REPO / "conf" / "model" / "resnet18_imagenet.yaml")
    state = write_imagenet_file("resnet18")
    model = create_model(**cfg, in_chans=3, num_classes=2)
    assert torch.equal(model.conv1.weight.detach(), state["conv1.weight"])
    assert input_normalization(cfg, 3) == (IMAGENET_MEAN, IMAGENET_STD)


def test_the_pretrained_row_of_table_3_works_offline() -> None:
    """Table 3's "fine-tuned pretrained CNN" is the packaged EfficientNet-Lite0 (no download),
    and every model of the sweep is one the config group knows."""
    sweep = OmegaConf.load(REPO / "conf" / "experiment" / "paper_table3_baselines.yaml")
    models = sweep.hydra.sweeper.params.model.split(",")
    assert models[-1] == "efficientnet_lite0_imagenet"
    for name in models:
        assert (REPO / "conf" / "model" / f"{name}.yaml").is_file()


def test_missing_imagenet_file_offline_names_the_file_and_folder(torch_home: Path) -> None:
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        create_model("resnet18", pretrained="imagenet", in_chans=3, num_classes=2)
    message = str(info.value)
    file = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(file) in message and "could not be downloaded" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    torch.save({"not": torch.zeros(1)}, file)  # present but not ResNet-18's weights
    with pytest.raises(PretrainedWeightsUnavailable, match="in the cache but cannot be loaded"):
        create_model("resnet18", pretrained="imagenet", in_chans=3, num_classes=2)


def test_normalisation_follows_the_weights() -> None:
    tv = {"name": "resnet18", "pretrained": "imagenet"}
    assert input_normalization(tv, 3) == (IMAGENET_MEAN, IMAGENET_STD)
    (mean,), (std,) = input_normalization(tv, 1)
    assert mean == pytest.approx(np.mean(IMAGENET_MEAN)) and std == pytest.approx(
        np.mean(IMAGENET_STD)
    )
    assert input_normalization({"name": "resnet18", "pretrained": None}, 3) is None
    assert input_normalization({"name": "fus2net"}, 3) is None  # the paper's standardisation
    timm_cfg = {"name": "convnext_tiny", "source": "timm", "pretrained": True}
    assert input_normalization(timm_cfg, 3) == (IMAGENET_MEAN, IMAGENET_STD)
    assert input_normalization({**timm_cfg, "pretrained": False}, 3) is None
    image = np.full((4, 4, 3), 255, np.uint8)
    x = normalize(image, (IMAGENET_MEAN, IMAGENET_STD))
    white = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert x[0, 0] == pytest.approx(white)
    assert normalize(image).std() == 0  # per-image standardisation: a flat image is all zeros


def test_any_timm_model_for_one_channel_and_two_classes() -> None:
    model = create_model("resnet10t", source="timm", in_chans=1, num_classes=2, drop_rate=0.5)
    layout = model_layout(model)
    assert layout is not None
    assert (layout.first_conv, layout.classifier, layout.min_input_size) == ("conv1.0", "fc", 32)
    assert regularized_weight(model).shape == (2, 512)
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 2)
    with pytest.raises(ValueError, match="not a timm model"):
        create_model("no_such_net", source="timm")


# A timm model in the Hugging Face cache layout (models--timm--<name>.<tag>/snapshots/<rev>/),
# read with HF_HUB_OFFLINE=1 in a child process (huggingface_hub reads its settings at import).
_HF_SCRIPT = """
import json, sys, timm, torch
from safetensors.torch import save_file
from pathlib import Path
cache, name = Path(sys.argv[1]), sys.argv[2]
cfg = timm.models.get_pretrained_cfg(name)
repo = cache / ("models--" + cfg.hf_hub_id.replace("/", "--"))
snapshot = repo / "snapshots" / ("0" * 40)
snapshot.mkdir(parents=True)
(repo / "refs").mkdir()
(repo / "refs" / "main").write_text("0" * 40)
state = timm.create_model(name, pretrained=False).state_dict()
state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in state.items()}
save_file(state, str(snapshot / "model.safetensors"))
"""


def test_timm_pretrained_weights_come_from_the_hugging_face_cache(tmp_path: Path) -> None:
    cache = tmp_path / "hf" / "hub"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    check = (
        "import sys, torch; from fus2net.models import create_model; "
        "m = create_model('resnet10t', source='timm', pretrained=True, in_chans=1, "
        "num_classes=2); w = m.get_submodule('layer4.0.conv1').weight; "
        "print(bool((w == 0.5).all()), tuple(m.fc.weight.shape))"
    )

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], env=env, capture_output=True, text=True, timeout=300
        )

    missing = python("-c", check)
    assert missing.returncode != 0
    assert "not in the Hugging Face cache" in missing.stderr and str(cache) in missing.stderr
    made = python("-c", _HF_SCRIPT, str(cache), "resnet10t")
    assert made.returncode == 0, made.stderr
    loaded = python("-c", check)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["True", "(2,", "512)"]  # loaded body, a fresh 2-class head


def test_pretrained_job_records_the_normalisation_and_predicts_alike(
    tmp_path: Path, torch_home: Path
) -> None:
    """fus2net-train with ImageNet weights from the cache; the saved model spec holds the
    ImageNet mean/std (not the starting weights), and fus2net-predict uses them."""
    home = torch_home
    env = train_env(tmp_path, TORCH_HOME=str(home))
    write_imagenet_file("resnet18")
    args = tiny("model=resnet18", "model.pretrained=imagenet", "hydra.run.dir=out")
    run_train(args, tmp_path, env=env)
    spec = json.loads((tmp_path / "out" / "fus2net_model.json").read_text())
    assert spec["normalization"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert "pretrained" not in spec["model"] and spec["model"]["name"] == "resnet18"
    image = next((tmp_path / "data" / "synthetic").rglob("*.png"))
    # prediction rebuilds the members without the ImageNet file (the cache is gone)
    for file in home.rglob("*.pth"):
        file.unlink()
    predict = [str(tmp_path / "out"), str(image), "--no-gradcam", "--out", str(tmp_path / "p")]
    done = run_module("fus2net.cli.predict", predict, tmp_path, env=env)
    assert "malignant" in done.stdout or "benign" in done.stdout


def test_fus2net_train_offline_without_the_file_exits_2_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "torch"
    # a refused proxy: a machine with internet does not download 45 MB here either
    env = train_env(tmp_path, TORCH_HOME=str(home), https_proxy="http://127.0.0.1:9")
    args = tiny("model=resnet18", "model.pretrained=imagenet")
    done = run_train(args, tmp_path, env=env, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert str(home / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in output
    assert "Traceback" not in output
    assert not (tmp_path / "data").exists()  # stopped before any data was prepared
