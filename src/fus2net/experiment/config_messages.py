"""How `experiment.config_schema` names a wrong value: what a key accepts, in words, and the
closest valid choice or key."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
import typing
from collections.abc import Iterator, Mapping
from enum import Enum
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from fus2net.experiment.config_signatures import NONE_TYPE, union_members

# ------------------------------------------------------------------------------ messages


def show(value: Any) -> str:
    """A value as it would be written in a command-line override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.name)
    if isinstance(value, str):
        return value if re.fullmatch(r"[\w.:/@+\-${}]+", value) else repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


_NOUNS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
_PLURALS = {bool: "true/false values", int: "whole numbers", float: "numbers", str: "strings"}


def _kind(hint: Any) -> str:
    if hint is Any:
        return "any value"
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(m.name for m in hint)
    if dataclasses.is_dataclass(hint):
        return f"a group of settings ({', '.join(f.name for f in dataclasses.fields(hint))})"
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        item = (typing.get_args(hint) or (Any,))[0]
        return f"a list of {_PLURALS[item]}" if item in _PLURALS else "a list"
    if origin is dict:
        return "a mapping"
    return _NOUNS.get(hint, getattr(hint, "__name__", str(hint)))


def _bounds(rules: Mapping[str, Any]) -> str:
    parts = [
        f"{op} {show(rules[name])}"
        for name, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if name in rules
    ]
    return " and ".join(parts)


_LISTED_CHOICES = 40  # longer lists are counted, not printed


def _choices(rules: Mapping[str, Any]) -> list[Any] | None:
    choices = rules.get("choices")
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)


def accepts(hint: Any, rules: Mapping[str, Any]) -> str:
    """What a field takes, in words: type, bounds, choices, and null where it may be."""
    members = union_members(hint)
    optional = NONE_TYPE in members
    if optional:
        hint = next(m for m in members if m is not NONE_TYPE)
    choices = _choices(rules)
    if choices is not None and len(choices) > _LISTED_CHOICES:  # e.g. timm's 1,300 names
        return f"one of {len(choices)} names ({rules.get('listed_by', 'see the docs')})"
    if choices is not None:
        return "one of " + ", ".join(dict.fromkeys(show(c) for c in choices))
    text = "a whole number" if rules.get("whole") else _kind(hint)
    if rules.get("nonempty"):
        text = text.replace("a ", "a non-empty ", 1)
    bounds = _bounds(rules)
    if bounds:
        text += (" with every value " if text.startswith("a ") and "list" in text else " ") + bounds
    return text + (", or null" if optional else "")


def near_choice(value: Any, hint: Any, rules: Mapping[str, Any]) -> str:
    """ "; did you mean X?" for a misspelt choice (`data.cache=memroy`), else ""."""
    members = [m for m in union_members(hint) if m is not NONE_TYPE]
    choices = _choices(rules)
    if choices is None and members and isinstance(members[0], type):
        choices = [m.name for m in members[0]] if issubclass(members[0], Enum) else None
    names = [c for c in choices or [] if isinstance(c, str)]
    close = difflib.get_close_matches(str(value), names, n=1) if isinstance(value, str) else []
    return f"; did you mean {close[0]}?" if close else ""


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def breaks_rules(value: Any, rules: Mapping[str, Any]) -> bool:
    """Whether a value of the right type still breaks its field's rules."""
    choices = _choices(rules)
    if choices is not None:
        return not any(_same(value, c) for c in choices)
    if value is None:
        return False
    if rules.get("nonempty") and isinstance(value, str | list | tuple | dict) and not value:
        return True
    if rules.get("whole") and isinstance(value, float) and not value.is_integer():
        return True
    for item in value if isinstance(value, list | tuple) else [value]:
        if isinstance(item, bool) or not isinstance(item, int | float):
            continue
        below = ("ge" in rules and item < rules["ge"]) or ("gt" in rules and item <= rules["gt"])
        above = ("le" in rules and item > rules["le"]) or ("lt" in rules and item >= rules["lt"])
        if below or above:
            return True
    return False


def join_key(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def leaf_items(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf under a plain value, for naming unknown keys."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from leaf_items(item, join_key(path, key))
    else:
        yield path, value


def to_plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


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
