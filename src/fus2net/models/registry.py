"""Model registry (timm-style ``create_model`` / ``list_models``) and local-weight loading.

Models register a builder with :func:`register_model`; configs name them (``model.name``), so a
new architecture needs no change to the trainer. Weights only ever come from a local file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from torch import Tensor, nn

from fus2net.models.layout import model_layout
from fus2net.models.weights import load_weights

log = logging.getLogger(__name__)

ModelBuilder = TypeVar("ModelBuilder", bound=Callable[..., nn.Module])

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
# Libraries of whole model families (`model.source`): name -> builder(name, **kwargs).
_SOURCES: dict[str, Callable[..., nn.Module]] = {}

# Wrappers whose attribute name prefixes the keys of a saved model: Lightning modules
# (``self.model``), DataParallel/DDP (``module``), torch.compile (``_orig_mod``).
_WRAPPER_PREFIXES = ("model.", "module.", "_orig_mod.")


def register_model(builder: ModelBuilder) -> ModelBuilder:
    """Register ``builder`` under its function name (decorator)."""
    name = builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is already registered")
    _BUILDERS[name] = builder
    return builder


def register_source(source: str, builder: Callable[..., nn.Module]) -> None:
    """Register a library whose models are built by `builder(name, **kwargs)` when a config
    sets `model.source` (e.g. timm: any name timm lists)."""
    if source in _SOURCES:
        raise ValueError(f"model source {source!r} is already registered")
    _SOURCES[source] = builder


def list_sources() -> list[str]:
    return sorted(_SOURCES)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_BUILDERS)


def create_model(
    name: str,
    *,
    source: str | None = None,
    pretrained_path: str | os.PathLike[str] | None = None,
    lesion_crop: Mapping[str, Any] | None = None,
    **kwargs,
) -> nn.Module:
    """Build the registered model ``name`` (or ``source``'s model ``name``) with ``kwargs``,
    then load ``pretrained_path`` if given; ``lesion_crop`` (``model.lesion_crop``) puts it behind
    a lesion segmenter that crops its input (``fus2net.models.lesion_crop``).

    Typical use from Hydra: ``create_model(**cfg.model, in_chans=..., num_classes=...,
    drop_rate=...)`` where ``cfg.model`` holds ``name`` and the model's own options.
    """
    if source is not None:
        if source not in _SOURCES:
            raise ValueError(f"unknown model.source {source!r}; available: {list_sources()}")
        model = _SOURCES[source](name, **kwargs)
    elif name not in _BUILDERS:
        raise ValueError(
            f"unknown model {name!r}; available: {', '.join(list_models())} "
            f"(set model=<name>, one of conf/model/*.yaml)"
        )
    else:
        model = _BUILDERS[name](**kwargs)
    if pretrained_path is not None:
        load_pretrained(model, pretrained_path)
    if lesion_crop is not None:  # behind a lesion segmenter (fus2net.models.lesion_crop)
        from .lesion_crop import lesion_crop_net

        model = lesion_crop_net(model, int(kwargs.get("in_chans", 3)), lesion_crop)
    return model


def load_pretrained(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a local state dict into ``model``, keeping fresh weights where the head or input differ.

    Accepts a plain ``state_dict`` file or a checkpoint dict holding one under ``"state_dict"``
    (Lightning), with wrapper prefixes such as ``model.`` removed. Tensors of the first conv or
    the classifier whose shapes differ (other ``in_chans`` / ``num_classes``) are skipped and
    logged; any other missing or mis-shaped tensor means another architecture and raises.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"model.pretrained_path={str(path)!r} does not exist; point it at a file saved with "
            f"torch.save(model.state_dict(), path), or set it to null to train from scratch"
        )
    checkpoint = load_weights(file)  # a WeightsFileError (ValueError) naming the file
    state_dict = _unwrap_state_dict(checkpoint, file)
    own = model.state_dict()
    state_dict = {_strip_wrapper_prefixes(key, own): value for key, value in state_dict.items()}

    layout = model_layout(model)
    adaptable = (f"{layout.first_conv}.", f"{layout.classifier}.") if layout else ()
    skipped = [
        key
        for key, value in state_dict.items()
        if key in own and value.shape != own[key].shape and key.startswith(adaptable)
    ]
    mismatched = [
        f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}"
        for key, value in state_dict.items()
        if key in own and value.shape != own[key].shape and key not in skipped
    ]
    missing = [
        key for key in own if key not in state_dict and not key.endswith("num_batches_tracked")
    ]
    if mismatched or missing:
        raise ValueError(
            f"{file} does not fit {type(model).__name__}: missing {_preview(missing)}, "
            f"shape mismatches {_preview(mismatched)}; was it saved from another model.name?"
        )
    unexpected = [key for key in state_dict if key not in own]
    if unexpected:
        log.warning("%s: ignoring tensors the model does not have: %s", file, _preview(unexpected))
    loadable = {
        key: value for key, value in state_dict.items() if key in own and key not in skipped
    }
    model.load_state_dict(loadable, strict=False)
    if skipped:
        log.info("%s: kept fresh weights for differently shaped %s", file, ", ".join(skipped))
    log.info("loaded %d tensors from %s", len(loadable), file)


def _unwrap_state_dict(checkpoint: object, file: Path) -> Mapping[str, Tensor]:
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping) or not all(
        isinstance(value, Tensor) for value in checkpoint.values()
    ):
        raise ValueError(
            f"{file}: expected a state dict (name -> tensor) or a checkpoint with a 'state_dict' "
            f"entry; save one with torch.save(model.state_dict(), path)"
        )
    return checkpoint


def _strip_wrapper_prefixes(key: str, own: Mapping[str, Tensor]) -> str:
    """Drop wrapper prefixes from ``key`` until it names a model tensor or none is left."""
    while key not in own and key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def _preview(items: list[str], limit: int = 5) -> str:
    if not items:
        return "none"
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
