"""A `_target_` node's accepted keys and types, read from its target's signature (the class
itself is the source of truth for what it takes), for `experiment.config_schema`."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import field
from typing import Any, Literal

from omegaconf import MISSING

from fus2net.experiment.config_groups import HYDRA_INSTANTIATE_KEYS, TargetGroup

# ------------------------------------------------------------------- signatures as schemas

_PRIMITIVES = (bool, int, float, str)
_CONTAINERS = (list, tuple, dict, set, frozenset, Sequence, Mapping, Collection, Iterable)
NONE_TYPE = type(None)


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


def infer_type(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """(OmegaConf field type, rules) of a signature annotation: a primitive (`float | Tensor`
    is a float: a config cannot hold a tensor), Optional of one, choices of a Literal, else
    Any (containers, unions of several primitives, classes), which the target checks itself."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return Any, {}
    if isinstance(annotation, str):
        annotation = _parse_annotation(annotation)
    origin = typing.get_origin(annotation)
    members = (
        typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)
    )
    optional = NONE_TYPE in members
    members = tuple(m for m in members if m is not NONE_TYPE)
    literals = [v for m in members if typing.get_origin(m) is Literal for v in typing.get_args(m)]
    rest = [m for m in members if typing.get_origin(m) is not Literal]
    if literals:
        if all(m is bool for m in rest):
            choices = [*literals, *([True, False] if rest else []), *([None] if optional else [])]
            return Any, {"choices": tuple(choices)}
        return Any, {}
    found = set()
    for member in rest:
        base = typing.get_origin(member) or member
        if member is Any or base in _CONTAINERS:
            return Any, {}
        if base in _PRIMITIVES:
            found.add(base)
    if found == {int, float}:
        found = {float}
    if len(found) != 1:
        return Any, {}
    (kind,) = found
    return (kind | None if optional else kind), {}


def union_members(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a signature default can stand as the schema field's default."""
    if hint is Any:
        return True
    members = union_members(hint)
    if value is None:
        return NONE_TYPE in members
    if isinstance(value, bool):
        return bool in members
    return any(
        isinstance(value, m) or (m is float and isinstance(value, int))
        for m in members
        if isinstance(m, type) and m is not NONE_TYPE
    )


def _field_from(spec: dataclasses.Field, hint: Any, extra_rules: Mapping[str, Any]) -> tuple:
    """A dataclass field of `base` again, its rules completed by the signature's."""
    rules = {**extra_rules, **spec.metadata}
    if spec.default is not dataclasses.MISSING:
        return spec.name, hint, field(default=spec.default, metadata=rules)
    if spec.default_factory is not dataclasses.MISSING:
        return spec.name, hint, field(default_factory=spec.default_factory, metadata=rules)
    return spec.name, hint, field(default=MISSING, metadata=rules)


def signature_schema(
    target: Callable[..., Any],
    base: type | None = None,
    group: TargetGroup | None = None,
    instantiate_keys: bool = True,
) -> tuple[type, bool]:
    """A dataclass of `target`'s keyword arguments (and Hydra's `_target_` keys), with the
    fields of `base` in front where it types them better; True when the target also takes
    `**kwargs`, so that any other key is passed on."""
    group = group or TargetGroup()
    try:
        signature = inspect.signature(target, eval_str=True)
    except ValueError:  # no signature to read (a builtin): every key is passed on
        signature = inspect.Signature([inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])
    except Exception:  # an annotation that does not evaluate: read them as text
        signature = inspect.signature(target)
    params = {
        name: p
        for name, p in signature.parameters.items()
        if name not in group.passed and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    inferred = {name: infer_type(p.annotation) for name, p in params.items()}
    fields: list[tuple] = []
    if base is not None:
        hints = typing.get_type_hints(base)
        for spec in dataclasses.fields(base):
            hint = hints[spec.name]
            extra = dict(group.rules.get(spec.name, {}))
            if hint is Any:  # e.g. trainer.precision: the Literal choices of the signature
                extra = {**inferred.get(spec.name, (Any, {}))[1], **extra}
            fields.append(_field_from(spec, hint, extra))
    have = {f[0] for f in fields}
    for name, p in params.items():
        if name in have:
            continue
        hint, rules = inferred[name]
        rules = {**rules, **group.rules.get(name, {})}
        default = p.default
        if default is p.empty:
            default = MISSING
        elif not _fits(default, hint) or not isinstance(default, (*_PRIMITIVES, tuple, NONE_TYPE)):
            hint = Any  # e.g. a Path or an Accelerator instance as default: the target checks
            default = default if isinstance(default, tuple) else None
        fields.append((name, hint, field(default=default, metadata=rules)))
    if instantiate_keys:
        for name, (hint, default) in HYDRA_INSTANTIATE_KEYS.items():
            if name not in have:
                rules = {}
                if name == "_partial_" and group.partial is not None:
                    rules = {"choices": (group.partial,)}
                fields.append((name, hint, field(default=default, metadata=rules)))
    title = getattr(target, "__name__", "Target")
    return dataclasses.make_dataclass(f"{title}Settings", fields), takes_kwargs
