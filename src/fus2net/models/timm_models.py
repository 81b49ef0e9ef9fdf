"""Any timm network as a baseline (`model=timm model.name=<any timm name>`).

timm builds it (`timm.create_model`: the input conv adapted to `in_chans` and the head made for
`num_classes` as timm does, pretrained weights through timm's own loading and the Hugging Face
cache) and it stays timm's class: the project reads its input conv and classifier from the
model's own `pretrained_cfg` (`layout.model_layout`), so parameter names stay timm's.
"""

from __future__ import annotations

from torch import nn

from .layout import guard_input_size
from .packaged_weights import PACKAGE, PackagedWeightsError, timm_weights_file
from .pretrained import PretrainedWeightsUnavailable, hf_cache_dir, timm_pretrained_tag
from .registry import register_source

TIMM = "timm"  # model.source of a timm network
HUB = "hub"  # model.pretrained_source: timm's own weights (Hugging Face hub and cache)
PRETRAINED_SOURCES = (HUB, PACKAGE)


def timm_names() -> list[str]:
    """Every architecture timm can build (`timm.list_models()`)."""
    import timm

    return list(timm.list_models())


def build_timm_model(
    name: str,
    in_chans: int = 3,
    num_classes: int = 2,
    drop_rate: float = 0.0,
    pretrained: bool = False,
    pretrained_source: str = HUB,
) -> nn.Module:
    """timm's `name` for `in_chans` and `num_classes`, from its pretrained weights if asked:
    timm's own (`pretrained_source=hub`) or the checkpoint a package in the lock ships
    (`package`, offline; `fus2net.models.packaged_weights`)."""
    import timm

    if not timm.is_model(name):
        raise ValueError(f"model.name={name!r}: not a timm model; see timm.list_models()")
    if pretrained_source not in PRETRAINED_SOURCES:
        raise ValueError(
            f"model.pretrained_source={pretrained_source!r}: use one of "
            f"{', '.join(PRETRAINED_SOURCES)}"
        )
    options = {"in_chans": in_chans, "num_classes": num_classes, "drop_rate": drop_rate}
    if pretrained and pretrained_source == PACKAGE:
        try:
            file = timm_weights_file(name)
        except (PackagedWeightsError, OSError) as err:
            raise PretrainedWeightsUnavailable(f"model.pretrained_source=package: {err}") from err
        overlay = {"file": str(file), "hf_hub_id": None, "url": None, "source": None}
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **options)
    elif pretrained:
        tag = timm_pretrained_tag(name)
        try:
            model = timm.create_model(name, pretrained=True, **options)
        except Exception as err:  # offline (HF_HUB_OFFLINE) or unreachable hub, torn file
            raise PretrainedWeightsUnavailable(
                f"model.pretrained=true: timm's weights of {name!r} ({tag}) are not in the "
                f"Hugging Face cache ({hf_cache_dir()}, set by HF_HOME) and could not be "
                f"downloaded ({type(err).__name__}: {err}). Download them once online (e.g. "
                f"`python -c \"import timm; timm.create_model('{name}', pretrained=True)\"`), "
                "or set model.pretrained=false to train from scratch"
            ) from err
    else:
        model = timm.create_model(name, pretrained=False, **options)
    guard_input_size(model, name)
    return model


register_source(TIMM, build_timm_model)
