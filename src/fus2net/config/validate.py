"""The typed schema of `fus2net-train`'s config, checked once before any data is read.

Why: Hydra composes whatever it is given. Without a schema `cv.folds=abc` is a traceback,
`cv.folds=2.5` is truncated, `optimizer.lr=-1` fails after the data is prepared, and
`+data.imgsize=64` (Hydra's own hint after a typo) runs silently as a new cell. pydantic
checks the composed config against the models of `config_groups` (types, ranges, choices,
defaults, unknown keys) in one pass; this module only words its errors the project's way, so
that one `ConfigError` lists every wrong key, its value, what it accepts and the closest key.

Which keys exist:

- the fixed groups (`data`, `cv`, `paths`, `balance`, `regularization`, `tracking`,
  `evaluation`, `seed`) and `model` (by `model.name`) are closed: their model lists them;
- a `_target_` node (`dataset`, every `eval_datasets` entry, `optimizer`, `scheduler`,
  `augmentation` and each of its transforms) takes the keyword arguments of its target's
  signature, typed by the signature where it says (and by our model where we know more);
  arguments the code passes itself (the optimizer's `params`) are not settings;
- `trainer` takes our keys plus any `pytorch_lightning.Trainer` argument, except those
  fus2net sets itself;
- `eval_datasets` is open: any name, each entry a dataset config as above.

Cross-field checks (a test fraction or counts, `cv.fold` < `cv.folds`, the model's minimum
input size, a GPU, the launcher) stay in `preflight.check_config`, which runs after this.
Hydra's own `hydra` node is Hydra's business and not looked at.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError, create_model
from pydantic.fields import FieldInfo
from typing_extensions import TypedDict, is_typeddict

from fus2net.config.groups import (
    CHOSEN_GROUPS,
    TARGET_GROUPS,
    TRAINER_SET_BY_FUS2NET,
    Node,
    NoScheduler,
    TargetGroup,
    TrainConfig,
    dataset_schemas,
)
from fus2net.config.messages import (
    accepts,
    join_key,
    leaf_items,
    locate,
    near_choice,
    reason_of,
    show,
)
from fus2net.config.preflight import ConfigError
from fus2net.config.signatures import model_type, signature_model, trainer_type

Problem = tuple[str, str]  # (dotted key, what is wrong with it)

# ------------------------------------------------------------------------------ plain values


@dataclass(frozen=True)
class _Unset:
    """A value the config does not give: `???`, or an interpolation that does not resolve."""

    reason: str = ""  # why it does not resolve; "" for `???`

    def __str__(self) -> str:
        return "..." if self.reason else "???"

    def said(self, path: str, spec: FieldInfo) -> str:
        if self.reason:
            return f"{path}: cannot be resolved: {self.reason}"
        return f"{path}=???: needs a value: {accepts(spec)}"


def _plain(node: Any, top: bool = True) -> Any:
    """The composed config as plain values, each key resolved on its own, so that one bad
    interpolation does not hide the next key."""
    if isinstance(node, DictConfig):
        keys = [k for k in node if not (top and k == "hydra")]  # Hydra's own node
        return {key: _value(node, key) for key in keys}
    if isinstance(node, ListConfig):
        return [_value(node, i) for i in range(len(node))]
    return node


def _value(node: DictConfig | ListConfig, key: Any) -> Any:
    if OmegaConf.is_missing(node, key):
        return _Unset()
    try:
        return _plain(node[key], top=False)
    except OmegaConfBaseException as err:
        return _Unset(reason_of(err))


def _walk(value: Any, loc: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(where, what) of `value` and of every value under it, in the config's order."""
    yield loc, value
    if isinstance(value, dict | list):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            yield from _walk(item, (*loc, key))


def _unset(value: Any) -> list[tuple[tuple, _Unset]]:
    return [(loc, item) for loc, item in _walk(value) if isinstance(item, _Unset)]


# ------------------------------------------------------------------------------ the chosen types

_EXAMPLE_TARGETS = {
    "dataset": "fus2net.data.sources.FolderSource (or choose dataset=busi, folder, manifest)",
    "optimizer": "torch.optim.Adam (or choose optimizer=adam, rmsprop, sgd)",
    "scheduler": "torch.optim.lr_scheduler.StepLR (or choose scheduler=none, cosine, step)",
    "augmentation": "albumentations.HorizontalFlip (or choose augmentation=paper, none)",
}
_SETTINGS = {  # what a chosen node must be, in words
    "model": "settings with a name",
    "trainer": "Trainer settings",
    "eval_datasets": "a mapping of name -> dataset (add one with "
    "'+dataset@eval_datasets.NAME=busbra')",
}


def _is_target(value: Any) -> bool:
    return isinstance(value, dict) and "_target_" in value


@cache
def target_model(target: Any, group: str) -> type[Node]:
    """The model of `target`'s arguments in `group` (a dataset's typed by ours)."""
    base = dataset_schemas().get(target) if group == "dataset" else None
    return signature_model(target, TARGET_GROUPS.get(group, TargetGroup()), base)


def chosen_type(value: Any, path: str, group: str, problems: list[Problem]) -> Any:
    """The type of a node typed by what it holds: `model` by its name, `trainer`, each
    `eval_datasets` entry, and a node Hydra instantiates by its target's arguments (with the
    nodes inside typed by their own targets); Any (the problem said) where it cannot be."""
    if isinstance(value, _Unset) or (value is None and group in ("augmentation", "eval_datasets")):
        return Any  # said where it is unset; augmentation=none
    if not isinstance(value, dict):
        must = _SETTINGS.get(group, "settings with a _target_")
        problems.append((path, f"{path}={show(value)}: must be {must}"))
        return Any
    if group in ("model", "trainer"):
        return model_type(value) if group == "model" else trainer_type()
    if group == "eval_datasets":
        entries = {
            k: chosen_type(v, join_key(path, k), "dataset", problems) for k, v in value.items()
        }
        return TypedDict("EvalDatasets", entries)  # type: ignore[operator]
    target = value.get("_target_")
    if target is None:
        if group == "scheduler":
            return NoScheduler
        problems.append((path, f"{path}._target_: missing; set it to a class to build"))
        return Any
    try:
        model = target_model(locate(str(target)), group)
    except Exception as err:  # not importable, or no signature to read
        text = f"{path}._target_={show(target)}: cannot be used ({reason_of(err)}); it must "
        problems.append((path, f"{text}name an importable class, e.g. {_EXAMPLE_TARGETS[group]}"))
        return Any
    inner = {}
    for name, spec in model.model_fields.items():
        key = spec.alias or name
        if spec.annotation is Any and key in value:
            typed = _inside(value[key], f"{path}.{key}", group, problems)
            inner.update({name: (typed, spec)} if typed is not None else {})
    return create_model(model.__name__, __base__=model, **inner) if inner else model


def _inside(value: Any, path: str, group: str, problems: list[Problem]) -> Any:
    """Nodes with their own `_target_` inside an Any argument (albumentations.Compose's
    transforms, a pooled dataset's members): Hydra builds them too, so each is typed by its
    own target. None when there is none."""

    def typed(item: Any, key: Any) -> Any:
        where = join_key(path, key)
        return chosen_type(item, where, group, problems) if _is_target(item) else Any

    if _is_target(value):
        return chosen_type(value, path, group, problems)
    if isinstance(value, dict) and any(map(_is_target, value.values())):
        return TypedDict("Nodes", {k: typed(v, k) for k, v in value.items()})  # type: ignore[operator]
    if isinstance(value, list) and any(map(_is_target, value)):
        return tuple[tuple(typed(v, i) for i, v in enumerate(value))]  # type: ignore[misc]
    return None


def train_schema(plain: dict[str, Any], problems: list[Problem]) -> type[TrainConfig]:
    """TrainConfig with its open groups (its Any fields) typed by what this config holds."""
    fields = {
        key: (chosen_type(plain[key], key, key, problems), spec)
        for key, spec in TrainConfig.model_fields.items()
        if spec.annotation is Any and key in plain
    }
    return create_model("TrainConfig", __base__=TrainConfig, **fields)  # type: ignore[call-overload]


# ------------------------------------------------------------------------------ pydantic's errors


def _unwrap_optional(kind: Any) -> Any:
    """X of `X | None`; any other type as it is."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else kind
    return kind


def _fields(kind: Any) -> dict[Any, FieldInfo] | None:
    """The keys of a node type (a model's, a TypedDict's, a tuple's positions) and their
    fields; None for a leaf. An optional node (`X | None`) is X's."""
    kind = _unwrap_optional(kind)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return {spec.alias or name: spec for name, spec in kind.model_fields.items()}
    if is_typeddict(kind):
        return {k: FieldInfo.from_annotation(a) for k, a in kind.__annotations__.items()}
    if typing.get_origin(kind) is tuple:
        return {i: FieldInfo.from_annotation(a) for i, a in enumerate(typing.get_args(kind))}
    return None


def _locate(schema: type, loc: tuple) -> tuple[tuple, FieldInfo, dict[Any, FieldInfo]]:
    """The longest start of `loc` that names keys, the field of its last key, and the keys
    of the node that ends it (for an unknown key, its siblings)."""
    spec, fields, used = FieldInfo.from_annotation(Any), _fields(schema) or {}, ()
    for part in loc:
        if part not in fields:
            break
        used, spec = (*used, part), fields[part]
        fields = _fields(spec.annotation) or {}
    return used, spec, fields


def _at(plain: Any, loc: tuple) -> Any:
    """The value at `loc` (None where the config has none)."""
    for part in loc:
        listed = isinstance(plain, list) and isinstance(part, int) and part < len(plain)
        plain = plain[part] if listed else plain.get(part) if isinstance(plain, dict) else None
    return plain


def _keys(kind: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key a node type has, nested ones too (for 'did you mean')."""
    for key, spec in (_fields(kind) or {}).items():
        yield join_key(prefix, key)
        yield from _keys(spec.annotation, join_key(prefix, key))


def _wrong(path: str, value: Any, spec: FieldInfo, error: Any) -> str:
    for _, unset in _unset(value)[:1]:
        return unset.said(path, spec)
    if error["type"] == "missing" and path in CHOSEN_GROUPS:
        return f"{path}: missing; choose one ({path}=...)"
    if error["type"] == "missing":
        return f"{path}: missing; set it to {accepts(spec)}"
    if error["type"] == "value_error":  # a sentence of our own (ImageLimits')
        return str(error["ctx"]["error"])
    return f"{path}={show(value)}: must be {accepts(spec)}{near_choice(value, spec)}"


def _unknown(key: str, value: Any, siblings: list[str], known: list[str]) -> str:
    """An unknown key, with the closest known key when one is close: the same name in
    another group first (`data.max_epochs`: trainer.max_epochs), else a near one in its own
    group, else a near one anywhere."""

    def leaf(name: str) -> str:
        return name.rsplit(".", 1)[-1]

    leaves = list(leaf_items(value, key))
    shown = ", ".join(f"{k}={show(v)}" for k, v in leaves[:3])
    shown += f" (and {len(leaves) - 3} more)" if len(leaves) > 3 else ""
    name = leaf(key)
    known = [k for k in known if k != key and not leaf(k).startswith("_")]
    siblings = [k for k in siblings if not leaf(k).startswith("_")]
    close = [k for k in known if leaf(k) == name][:1]
    for pool, cutoff in ((siblings, 0.7), (known, 0.8)):
        if not close:
            near = difflib.get_close_matches(name, [leaf(k) for k in pool], 1, cutoff)
            close = [k for k in pool if near and leaf(k) == near[0]][:1]
    hint = f"; did you mean {close[0]}?" if close else ""
    where = key.rsplit(".", 1)[0] if "." in key else "the config"
    names = [leaf(k) for k in siblings]
    listed = ", ".join(names[:20]) + (f", ... ({len(names)} keys)" if len(names) > 20 else "")
    return f"{shown}: unknown key {key}{hint} ({where} takes: {listed or 'none'})"


def _translate(
    schema: type, plain: dict[str, Any], errors: list[Any]
) -> tuple[list[Problem], list[Problem]]:
    """pydantic's errors (and the unset values no typed key refused) in the project's words,
    one line per key; and the unknown keys."""
    said: dict[tuple, Problem] = {}
    unknown: list[Problem] = []
    for error in errors:
        loc = tuple(error["loc"])
        used, spec, fields = _locate(schema, loc)
        path = ".".join(map(str, used))
        if error["type"] == "extra_forbidden" and len(used) == len(loc) - 1:
            key = join_key(path, loc[-1])
            if path == "trainer" and loc[-1] in TRAINER_SET_BY_FUS2NET:
                why = TRAINER_SET_BY_FUS2NET[loc[-1]]
                said[loc] = (key, f"{key}: set by fus2net itself ({why}), not a setting")
            else:
                siblings = [join_key(path, k) for k in fields]
                text = _unknown(key, error["input"], siblings, list(_keys(schema)))
                unknown.append((key, text))
                said[loc] = (key, "")
        elif used not in said:
            said[used] = (path, _wrong(path, _at(plain, used), spec, error))
    for loc, unset in _unset(plain):  # in an Any field: no error
        if not any(loc[: len(done)] == done for done in said):
            used, spec, _ = _locate(schema, loc)
            path = ".".join(map(str, loc))
            said[loc] = (path, unset.said(path, spec if used == loc else FieldInfo()))
    return [problem for problem in said.values() if problem[1]], unknown


# ------------------------------------------------------------------------------ the check


def _constructed(cfg: DictConfig, failed: set[str]) -> list[Problem]:
    """The optimizer, scheduler and augmentation built once on a dummy parameter, so that
    their own checks (Adam's betas, albumentations' ranges) run before any data is read."""
    import torch
    from hydra.utils import instantiate

    problems: list[Problem] = []

    def attempt(group: str, build: Callable[[], Any]) -> None:
        if group in failed or cfg.get(group) is None:
            return
        if not cfg[group].get("_target_"):
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                build()
        except Exception as err:
            outer = str(err)  # Hydra's: which target of a nested node, and its key
            target = re.search(r"call to target '([^']+)'", outer)
            where = re.search(r"full_key: (\S+)", outer)
            named = target.group(1) if target else cfg[group].get("_target_")
            if where:  # Hydra writes list items as `transforms0`
                key = re.sub(r"transforms(\d)", r"transforms.\1", where.group(1))
                named += f" ({key})"
            reason = reason_of(err.__cause__ or err)
            problems.append((group, f"{group}: {named} refuses these settings: {reason}"))

    weight = torch.nn.Parameter(torch.zeros(1))
    attempt("optimizer", lambda: instantiate(cfg.optimizer)([weight]))
    attempt("scheduler", lambda: instantiate(cfg.scheduler)(torch.optim.SGD([weight], lr=0.1)))
    attempt("augmentation", lambda: instantiate(cfg.augmentation))
    return problems


def _check(cfg: DictConfig) -> tuple[TrainConfig | None, list[Problem]]:
    plain = _plain(cfg)
    problems: list[Problem] = []
    schema = train_schema(plain, problems)
    typed, errors = None, []
    try:
        typed = schema.model_validate(plain)
    except ValidationError as err:
        errors = err.errors(include_url=False)
    wrong, unknown = _translate(schema, plain, errors)
    order = {".".join(map(str, loc)): i for i, (loc, _) in enumerate(_walk(plain))}
    problems = sorted(problems + wrong, key=lambda p: order.get(p[0], len(order)))  # the config's
    problems += sorted(unknown, key=lambda p: order.get(p[0], len(order)))  # order, unknown last
    problems += _constructed(cfg, {path.split(".")[0] for path, _ in problems})
    return (None if problems else typed), problems


def config_problems(cfg: DictConfig) -> list[str]:
    """Every way the composed config breaks the schema, one line each (empty: it keeps it)."""
    return [text for _, text in _check(cfg)[1]]


def validate_config(cfg: DictConfig) -> TrainConfig:
    """The config, typed (frozen; attribute access per group): or a ConfigError listing every
    key the schema refuses, its value and what it accepts (all at once, before any data is
    read)."""
    typed, problems = _check(cfg)
    if typed is None:
        texts = [text for _, text in problems]
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(texts))
    return typed
