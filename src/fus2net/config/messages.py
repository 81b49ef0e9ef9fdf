"""How `experiment.config_schema` names a wrong value: what a key accepts, in words (read from
the JSON schema pydantic gives its field), and the closest valid choice or key."""

from __future__ import annotations

import difflib
import importlib
import re
import typing
import warnings
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo


def show(value: Any) -> str:
    """A value as it would be written in a command-line override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if re.fullmatch(r"[\w.:/@+\-${}]+", value) else repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


def join_key(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def leaf_items(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf under a plain value, for naming unknown keys."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from leaf_items(item, join_key(path, key))
    else:
        yield path, value


# ------------------------------------------------------------------------------ what a key takes

_WORDS = {  # a JSON schema type: one value, several
    "boolean": ("true or false", "true/false values"),
    "integer": ("a whole number", "whole numbers"),
    "number": ("a number", "numbers"),
    "string": ("a string", "strings"),
    "array": ("a list", ""),
    "object": ("a mapping", ""),
}
# JSON schema's words for a bound; pydantic's own where a validator sits before the type
_BOUNDS = {">=": ("minimum", "ge"), ">": ("exclusiveMinimum", "gt")}
_BOUNDS |= {"<=": ("maximum", "le"), "<": ("exclusiveMaximum", "lt")}
_LISTED_CHOICES = 40  # longer lists are counted, not printed


def _json_schema(spec: FieldInfo) -> dict[str, Any]:
    """pydantic's JSON schema of a field's type and constraints (not its default)."""
    hint = Annotated[(spec.annotation, *spec.metadata)] if spec.metadata else spec.annotation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            schema = TypeAdapter(hint).json_schema()
        except Exception:  # a type with no JSON schema: the target checks it
            return {}
    return {**schema, **(spec.json_schema_extra or {})}  # type: ignore[dict-item]


def choices(spec: FieldInfo) -> list[Any] | None:
    """The values a field takes when it is a choice (a Literal, with true/false where it takes
    a bool too, and null where the Literal holds it), else None."""
    schema = _json_schema(spec)
    options = schema.get("anyOf", [schema])
    found = [v for o in options for v in o.get("enum", [o["const"]] if "const" in o else [])]
    if not found:
        return None
    named = [v for v in found if v is not None]
    if any(o.get("type") == "boolean" and "const" not in o for o in options):
        named += [True, False]
    return named + [None] * (None in found)


def _kind(option: Mapping[str, Any]) -> str:
    kind = option.get("type", "")
    items = option.get("items", {})
    text = _WORDS.get(kind, ("any value", ""))[0]
    several = _WORDS.get(items.get("type"), ("", ""))[1]
    if kind == "array" and several:
        text = f"a list of {several}"
    if option.get("minLength") or option.get("minItems"):
        text = text.replace("a ", "a non-empty ", 1)
    ranged = items if kind == "array" else option
    bounds = " and ".join(
        f"{op} {show(ranged[k])}" for op, keys in _BOUNDS.items() for k in keys if k in ranged
    )
    if bounds:
        text += (" with every value " if kind == "array" else " ") + bounds
    return text


def accepts(spec: FieldInfo) -> str:
    """What a field takes, in words: type, bounds, choices, and null where it may be."""
    hint = spec.annotation
    args = typing.get_args(hint)
    optional = type(None) in args and len(args) == 2  # `X | None`
    if optional:
        hint = next(a for a in args if a is not type(None))
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        names = ", ".join(f.alias or name for name, f in hint.model_fields.items())
        return f"a group of settings ({names})" + (", or null" if optional else "")
    schema = _json_schema(spec)
    options = schema.get("anyOf", [schema])
    kinds = [o for o in options if o.get("type") != "null"]
    null = ", or null" if len(kinds) < len(options) else ""
    found = choices(spec)
    if found is not None and len(found) > _LISTED_CHOICES:  # e.g. timm's 1,300 names
        return f"one of {len(found)} names ({schema.get('listed_by', 'see the docs')})"
    if found is not None:
        return "one of " + ", ".join(dict.fromkeys(show(c) for c in found)) + null
    return (_kind(kinds[0]) if len(kinds) == 1 else "any value") + null


def near_choice(value: Any, spec: FieldInfo) -> str:
    """ "; did you mean X?" for a misspelt choice (`data.cache=memroy`), else ""."""
    names = [c for c in choices(spec) or [] if isinstance(c, str)]
    close = difflib.get_close_matches(str(value), names, n=1) if isinstance(value, str) else []
    return f"; did you mean {close[0]}?" if close else ""


# ------------------------------------------------------------------------------ targets


def reason_of(err: BaseException, limit: int = 400) -> str:
    """An error's message on one line (pydantic's links to its docs left out)."""
    lines = [line.strip() for line in str(err).splitlines()]
    noise = ("For further", "full_key:", "object_type=", "reference_type=")  # pydantic, OmegaConf
    text = " ".join(line for line in lines if line and not line.startswith(noise))
    text = text or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def locate(path: str) -> Any:
    """The object a `_target_` names, found as Hydra finds it (the longest importable module,
    then attributes); ImportError says what is missing."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(found, name):
                raise ImportError(f"{module} has no {'.'.join(parts[i:])}")
            found = getattr(found, name)
        return found
    raise ImportError(f"no module named {parts[0]!r}")
