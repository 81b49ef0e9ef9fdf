"""A `_target_` node's accepted keys and types, read from its target's signature (the class
itself is the source of truth for what it takes), as a pydantic model for
`experiment.config_schema`; and so the types of `model` (by its name) and `trainer`."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, create_model

from fus2net.config.groups import (
    HYDRA_INSTANTIATE_KEYS,
    MODEL_ARGUMENTS_SET_BY_FUS2NET,
    TRAINER_SET_BY_FUS2NET,
    BaselineModel,
    Float,
    Fus2NetModel,
    Int,
    Node,
    OpenNode,
    Str,
    TargetGroup,
    TimmModel,
    Trainer,
)

_KINDS: dict[type, Any] = {bool: bool, int: Int, float: Float, str: Str}
_CONTAINERS = (list, tuple, dict, set, frozenset, Sequence, Mapping, Collection, Iterable)
NONE_TYPE = type(None)
_NUMBERS = (Int, Float, Int | None, Float | None)  # the kinds a bound of TargetGroup.rules fits


def _parse_annotation(text: str) -> Any:
    """A string annotation that could not be evaluated: `int`, `float | None`, ...; a part with
    brackets (a container, a Literal) makes it Any, an unknown class name is dropped."""
    names = {"int": int, "float": float, "bool": bool, "str": str, "None": NONE_TYPE}
    parts = [part.strip() for part in text.split("|")]
    if any("[" in part for part in parts):
        return Any
    known = [names[part] for part in parts if part in names]
    if not known:
        return Any
    return typing.Union[tuple(known)] if len(known) > 1 else known[0]  # noqa: UP007


def union_members(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def infer_type(annotation: Any) -> Any:
    """The config type of a signature annotation: a primitive (`float | Tensor` is a float: a
    config cannot hold a tensor), Optional of one, the choices of a Literal (with true/false
    where it takes a bool), else Any (containers, unions of several primitives, classes),
    which the target checks itself."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return Any
    if isinstance(annotation, str):
        annotation = _parse_annotation(annotation)
    members = union_members(annotation)
    optional = NONE_TYPE in members
    members = tuple(m for m in members if m is not NONE_TYPE)
    literals = [v for m in members if typing.get_origin(m) is Literal for v in typing.get_args(m)]
    rest = [m for m in members if typing.get_origin(m) is not Literal]
    if literals and not all(m is bool for m in rest):
        return Any
    if literals:  # null among the choices, as the signature lists it
        choices = Literal[(*literals, *[None] * optional)]
        return choices | bool if rest else choices
    found = set()
    for member in rest:
        base = typing.get_origin(member) or member
        if member is Any or base in _CONTAINERS:
            return Any
        if base in _KINDS:
            found.add(base)
    found = {float} if found == {int, float} else found
    if len(found) != 1:
        return Any
    kind = _KINDS[found.pop()]
    return kind | None if optional else kind


def _fits(value: Any, kind: Any) -> bool:
    """Whether a signature default is a value of the config type (else the type is Any)."""
    try:
        TypeAdapter(kind).validate_python(value)
    except ValidationError:
        return False
    return True


def _field_name(key: str) -> str:
    """The attribute of a key (Hydra's `_target_` is `target_`; `json` would hide a method)."""
    return f"{key.strip('_')}_" if key.startswith("_") or hasattr(BaseModel, key) else key


def signature_model(
    target: Callable[..., Any],
    group: TargetGroup | None = None,
    base: type[Node] | None = None,
    hydra_keys: bool = True,
) -> type[Node]:
    """A model of `target`'s keyword arguments (and Hydra's `_target_` keys), after the fields
    of `base`, which types them better (where `base` says Any: the signature's type); open
    when the target also takes `**kwargs`, so that any other key is passed on."""
    group = group or TargetGroup()
    try:
        signature = inspect.signature(target, eval_str=True)
    except ValueError:  # no signature to read (a builtin): every key is passed on
        signature = inspect.Signature([inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])
    except Exception:  # an annotation that does not evaluate: read them as text
        signature = inspect.signature(target)
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    ours = base.model_fields if base is not None else {}
    fields: dict[str, Any] = {}
    for key, p in signature.parameters.items():
        if key in group.passed or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        kind = infer_type(p.annotation)
        if key in ours:
            if ours[key].annotation is Any:  # e.g. trainer.precision: its Literal choices
                fields[key] = (kind, ours[key])
            continue
        default = ... if p.default is p.empty else p.default
        if default is not ... and not _fits(default, kind):
            kind = Any  # e.g. a Path or an Accelerator instance as default: the target checks
        bounds = group.rules.get(key, {}) if kind in _NUMBERS else {}
        fields[_field_name(key)] = (kind, Field(default, alias=key, **bounds))
    for key, (kind, default) in HYDRA_INSTANTIATE_KEYS.items() if hydra_keys else ():
        if _field_name(key) in ours:
            continue
        if key == "_partial_" and group.partial is not None:
            kind = Literal[group.partial]
        fields[_field_name(key)] = (kind, Field(default, alias=key))
    title = f"{getattr(target, '__name__', 'Target')}Settings"
    return create_model(title, __base__=base or (OpenNode if takes_kwargs else Node), **fields)


# ------------------------------------------------------------------- the chosen groups' types


def model_names() -> list[str]:
    from fus2net.models import list_models

    return list_models()


def _named(base: type[Node], names: list[str], listed_by: str | None = None) -> type[Node]:
    """`base` whose `name` is one of `names`."""
    extra = {"listed_by": listed_by} if listed_by else None
    name = (Literal[tuple(names)], Field(json_schema_extra=extra))
    return create_model(base.__name__, __base__=base, name=name)


@cache
def _model_types() -> dict[str, type[Node]]:
    from fus2net.models import Fus2Net
    from fus2net.models.timm_models import timm_names

    names = model_names()
    passed = TargetGroup(passed=MODEL_ARGUMENTS_SET_BY_FUS2NET)
    return {
        "fus2net": signature_model(Fus2Net, passed, _named(Fus2NetModel, names), hydra_keys=False),
        "baseline": _named(BaselineModel, names),
        "timm": _named(TimmModel, timm_names(), "timm.list_models()"),
        "unknown": _named(OpenNode, names),  # only its name is checked: it is wrong
    }


def model_type(model: Mapping[str, Any]) -> type[Node]:
    """The `model` group's type by what it names: any timm network (`source: timm`),
    fus2net (its signature's arguments, typed by Fus2NetModel) or a torchvision baseline."""
    types = _model_types()
    if model.get("source") is not None:
        return types["timm"]
    if model.get("name") not in model_names():
        return types["unknown"]
    return types["fus2net" if model["name"] == "fus2net" else "baseline"]


@cache
def trainer_type() -> type[Node]:
    """Our trainer keys, then every other `pytorch_lightning.Trainer` argument but those
    fus2net sets itself."""
    import pytorch_lightning as L
    from pytorch_lightning.accelerators import AcceleratorRegistry

    accelerators = sorted({*AcceleratorRegistry.available_accelerators(), "auto", "gpu"})
    accelerator = (Literal[tuple(accelerators)], ...)
    ours = create_model("Trainer", __base__=Trainer, accelerator=accelerator)
    passed = TargetGroup(passed=tuple(TRAINER_SET_BY_FUS2NET))
    return signature_model(L.Trainer, passed, ours, hydra_keys=False)
