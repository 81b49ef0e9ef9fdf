"""Pretrained starting weights through the libraries' own loaders and caches, and the input
normalisation such weights expect.

torchvision's ImageNet weights come from its weights API (`get_model_weights(name).DEFAULT`),
cached where torch.hub keeps them (`$TORCH_HOME/hub/checkpoints`); timm's through timm's own
loading and the Hugging Face cache (`HF_HOME`, `HF_HUB_OFFLINE`). Online both download as the
libraries do; offline a missing file is one clear error naming the file and its folder.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

IMAGENET = "imagenet"  # model.pretrained of the torchvision baselines
# Per-channel (mean, std) of [0, 1] pixels; `fus2net.data.transforms.normalize` applies it.
Normalization = tuple[tuple[float, ...], tuple[float, ...]]


class PretrainedWeightsUnavailable(ValueError):
    """The starting weights a config asks for can neither be found in the cache nor fetched."""


def torchvision_weights(name: str) -> Any:
    """The ImageNet weights enum torchvision recommends for `name` (its `DEFAULT`)."""
    from torchvision import models as tvm

    return tvm.get_model_weights(name).DEFAULT


def torchvision_cache_file(weights: Any) -> Path:
    """Where torch.hub keeps (or would download) `weights`' file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def torchvision_imagenet_model(name: str, **kwargs: Any) -> nn.Module:
    """torchvision's `name` built from its ImageNet weights by `get_model` itself (so each
    architecture's quirks stay torchvision's), the file from the cache or downloaded into it."""
    from torchvision import models as tvm

    weights = torchvision_weights(name)
    file = torchvision_cache_file(weights)
    try:
        return tvm.get_model(name, weights=weights, progress=False, **kwargs)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:  # URLError is one
        where = (
            "is in the cache but cannot be loaded"
            if file.is_file()
            else "is not in the cache and could not be downloaded"
        )
        raise PretrainedWeightsUnavailable(
            f"model.pretrained=imagenet: torchvision's {weights} ({file.name}) {where} "
            f"({type(err).__name__}: {err}). Put {weights.url} at {file} (the folder "
            "$TORCH_HOME/hub/checkpoints), or set model.pretrained=null to train from scratch"
        ) from err


def timm_pretrained_tag(name: str) -> str:
    """The Hugging Face repo timm loads `name`'s default pretrained weights from."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise PretrainedWeightsUnavailable(
            f"model.name={name!r}: timm has no pretrained weights for it; set "
            "model.pretrained=false or pick a name from timm.list_models(pretrained=True)"
        )
    return str(cfg.hf_hub_id or cfg.url or cfg.file)


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def input_normalization(model: Mapping[str, Any], in_chans: int) -> Normalization | None:
    """The (mean, std) a model config's pretrained weights expect, per input channel, as
    timm's data config resolves them; None for weights trained here from scratch (the paper's
    per-image standardisation). One channel takes the mean of the RGB values."""
    if model.get("source") == "timm":
        if not model.get("pretrained"):
            return None
        import timm

        cfg = timm.models.get_pretrained_cfg(str(model["name"]))
        mean, std = (tuple(cfg.mean), tuple(cfg.std)) if cfg else (None, None)
    elif model.get("pretrained") == IMAGENET:
        transforms = torchvision_weights(str(model["name"])).transforms()
        mean, std = tuple(transforms.mean), tuple(transforms.std)
    else:
        return None
    if mean is None or std is None:
        return None
    if in_chans == len(mean):
        return tuple(map(float, mean)), tuple(map(float, std))
    if in_chans == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    return (float(mean[0]),) * in_chans, (float(std[0]),) * in_chans
