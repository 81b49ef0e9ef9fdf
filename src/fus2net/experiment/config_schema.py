"""The typed schema of `fus2net-train`'s config, checked once before any data is read.

Why: Hydra composes whatever it is given. Without a schema `cv.folds=abc` is a traceback,
`cv.folds=2.5` is truncated, `optimizer.lr=-1` fails after the data is prepared, and
`+data.imgsize=64` (Hydra's own hint after a typo) runs silently as a new cell. Here every
group has a typed OmegaConf dataclass (types, `MISSING`, `Optional`, `Enum` choices) with its
ranges as field metadata; each key of the composed config is merged into it on its own, so
that one `ConfigError` lists every wrong key, its value and what it accepts.

Which keys exist:

- the fixed groups (`data`, `cv`, `paths`, `balance`, `regularization`, `tracking`,
  `evaluation`, `seed`) and `model` (by `model.name`) are closed: their dataclass lists them;
- a `_target_` node (`dataset`, every `eval_datasets` entry, `optimizer`, `scheduler`,
  `augmentation` and each of its transforms) takes the keyword arguments of its target's
  signature, typed by the signature where it says (and by our dataclass where we know more);
  arguments the code passes itself (the optimizer's `params`) are not settings;
- `trainer` takes our dataclass's keys plus any `pytorch_lightning.Trainer` argument, except
  those fus2net sets itself;
- `eval_datasets` is open: any name, each entry a dataset config as above.

Cross-field checks (a test fraction or counts, `cv.fold` < `cv.folds`, the model's minimum
input size, a GPU, the launcher) stay in `preflight.check_config`, which runs after this.
Hydra's own `hydra` node is Hydra's business and not looked at.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fus2net.experiment.config_groups import (
    MODEL_ARGUMENTS_SET_BY_FUS2NET,
    TARGET_GROUPS,
    TRAINER_SET_BY_FUS2NET,
    BaselineModelSchema,
    Fus2NetModelSchema,
    TargetGroup,
    TimmModelSchema,
    TrainerSchema,
    TrainSchema,
    dataset_schemas,
    model_names,
)
from fus2net.experiment.config_messages import (
    accepts,
    breaks_rules,
    join_key,
    leaf_items,
    locate,
    near_choice,
    reason_of,
    show,
    to_plain,
)
from fus2net.experiment.config_signatures import signature_schema
from fus2net.experiment.preflight import ConfigError

# ------------------------------------------------------------------------------ the check


@dataclass
class _Unknown:
    key: str
    shown: str
    siblings: list[str]


class _Check:
    """One walk of the composed config against the schema, collecting every problem."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.unknown: list[_Unknown] = []
        self.known: list[str] = []  # every dotted key the schema has, for "did you mean"
        self.failed_groups: set[str] = set()

    def problem(self, path: str, text: str) -> None:
        self.problems.append(text)
        self.failed_groups.add(path.split(".")[0])

    def node(
        self,
        schema_type: type,
        user: DictConfig,
        path: str,
        group: str = "",
        takes_kwargs: bool = False,
        set_by_code: Mapping[str, str] | None = None,
        handlers: Mapping[str, Callable[[Any], Any]] | None = None,
    ) -> None:
        """Merge each key of `user` into a fresh `schema_type` node on its own, so that one
        bad key does not hide the next; `handlers` check the keys typed by their content."""
        schema = OmegaConf.structured(schema_type)
        if takes_kwargs:
            OmegaConf.set_struct(schema, False)
        hints = typing.get_type_hints(schema_type)
        rules = {f.name: f.metadata for f in dataclasses.fields(schema_type)}
        names = [str(k) for k in schema]
        handlers = handlers or {}
        self.known += [join_key(path, k) for k in names]
        for key in user:
            full = join_key(path, key)
            if not path and key == "hydra":
                continue  # Hydra's own node
            if set_by_code and key in set_by_code:
                why = set_by_code[key]
                self.problem(full, f"{full}: set by fus2net itself ({why}), not a setting")
                continue
            if key not in names and not takes_kwargs:
                self._unknown(user, key, full, [join_key(path, k) for k in names])
                continue
            hint, rule_set = hints.get(str(key), Any), rules.get(str(key), {})
            if OmegaConf.is_missing(user, key):
                self.problem(full, f"{full}=???: needs a value: {accepts(hint, rule_set)}")
                continue
            try:
                value = user[key]
            except OmegaConfBaseException as err:
                self.problem(full, f"{full}: cannot be resolved: {reason_of(err)}")
                continue
            if key in handlers:
                handlers[key](value)
                continue
            if key not in names:  # passed on to a target's **kwargs, which checks it
                continue
            if isinstance(value, DictConfig) and dataclasses.is_dataclass(hint):
                self.node(hint, value, full, group)
                continue
            try:
                plain = to_plain(value)
            except OmegaConfBaseException as err:
                self.problem(full, f"{full}: cannot be resolved: {reason_of(err)}")
                continue
            if hint is Any:
                self._targets_inside(value, full, group)
            try:
                schema[key] = plain
                checked = plain if hint is Any else to_plain(schema[key])
                broken = breaks_rules(checked, rule_set)
            except OmegaConfBaseException:
                broken = True
            if broken:
                near = near_choice(plain, hint, rule_set)
                self.problem(full, f"{full}={show(plain)}: must be {accepts(hint, rule_set)}{near}")
        given = {str(k) for k in user}  # `in` is False for a ??? value
        for key in names:
            if key in given:
                continue
            full = join_key(path, key)
            if dataclasses.is_dataclass(hints[key]):
                self.node(hints[key], OmegaConf.create({}), full, group)
            elif key in handlers and OmegaConf.is_missing(schema, key):
                self.problem(full, f"{full}: missing; choose one ({full}=...)")
            elif OmegaConf.is_missing(schema, key):
                self.problem(full, f"{full}: missing; set it to {accepts(hints[key], rules[key])}")

    def _unknown(self, user: DictConfig, key: Any, full: str, siblings: list[str]) -> None:
        try:
            leaves = list(leaf_items(to_plain(user[key]), full))
        except OmegaConfBaseException:
            leaves = [(full, "...")]
        shown = ", ".join(f"{k}={show(v)}" for k, v in leaves[:3])
        shown += f" (and {len(leaves) - 3} more)" if len(leaves) > 3 else ""
        self.unknown.append(_Unknown(full, shown, siblings))
        self.failed_groups.add(full.split(".")[0])

    def _targets_inside(self, value: Any, path: str, group: str) -> None:
        """Nodes with their own `_target_` inside an Any field (albumentations.Compose's
        transforms, a pooled dataset's members): Hydra builds them too, so each is checked
        against its own target."""
        if not group:
            return
        if isinstance(value, DictConfig) and "_target_" in value:
            self.target(value, path, group)
        elif isinstance(value, DictConfig):  # name -> target (a pooled dataset's members)
            for key in value:
                item = value._get_node(key)
                if isinstance(item, DictConfig) and "_target_" in item:
                    self.target(item, join_key(path, key), group)
        elif isinstance(value, ListConfig):
            for i, item in enumerate(value):
                if isinstance(item, DictConfig) and "_target_" in item:
                    self.target(item, join_key(path, i), group)

    def target(self, user: Any, path: str, group: str) -> None:
        """A node Hydra instantiates: its keys are its target's arguments."""
        if user is None and group == "augmentation":
            return  # augmentation=none
        if not isinstance(user, DictConfig):
            self.problem(path, f"{path}={show(to_plain(user))}: must be settings with a _target_")
            return
        target = user.get("_target_")
        if target is None:
            if group != "scheduler":
                self.problem(path, f"{path}._target_: missing; set it to a class to build")
                return
            fields = [("_target_", str | None, field(default=None))]
            self.node(dataclasses.make_dataclass("NoScheduler", fields), user, path, group)
            return
        try:
            located = locate(str(target))
            base = dataset_schemas().get(located) if group == "dataset" else None
            schema_type, takes_kwargs = signature_schema(located, base, TARGET_GROUPS[group])
        except Exception as err:  # not importable, or no signature to read
            self.problem(
                path,
                f"{path}._target_={show(target)}: cannot be used ({reason_of(err)}); it must "
                f"name an importable class, e.g. {_EXAMPLE_TARGETS[group]}",
            )
            return
        self.node(schema_type, user, path, group, takes_kwargs)

    def model(self, user: Any) -> None:
        from fus2net.models import Fus2Net

        if not isinstance(user, DictConfig):
            self.problem("model", f"model={show(to_plain(user))}: must be settings with a name")
            return
        name = user.get("name")
        if user.get("source") is not None:
            self.node(TimmModelSchema, user, "model")
            return
        if name not in model_names():
            near = near_choice(name, str, {"choices": model_names})
            choices = ", ".join(model_names())
            self.problem("model", f"model.name={show(name)}: must be one of {choices}{near}")
            return
        group = TargetGroup(passed=MODEL_ARGUMENTS_SET_BY_FUS2NET)
        if name == "fus2net":
            schema_type, _ = signature_schema(Fus2Net, Fus2NetModelSchema, group, False)
        else:
            schema_type = BaselineModelSchema
        self.node(schema_type, user, "model")

    def trainer(self, user: Any) -> None:
        import pytorch_lightning as L

        if not isinstance(user, DictConfig):
            self.problem("trainer", f"trainer={show(to_plain(user))}: must be Trainer settings")
            return
        group = TargetGroup(passed=tuple(TRAINER_SET_BY_FUS2NET))
        schema_type, _ = signature_schema(L.Trainer, TrainerSchema, group, False)
        self.node(schema_type, user, "trainer", set_by_code=TRAINER_SET_BY_FUS2NET)

    def eval_datasets(self, user: Any) -> None:
        if user is None:
            return
        if not isinstance(user, DictConfig):
            self.problem(
                "eval_datasets",
                f"eval_datasets={show(to_plain(user))}: must be a mapping of name -> dataset "
                "(add one with '+dataset@eval_datasets.NAME=busbra')",
            )
            return
        for name in user:
            path = f"eval_datasets.{name}"
            try:
                entry = user[name]
            except OmegaConfBaseException as err:
                self.problem(path, f"{path}: cannot be resolved: {reason_of(err)}")
                continue
            self.target(entry, path, "dataset")

    def suggestions(self) -> None:
        """Word each unknown key, with the closest known key when one is close: the same
        name in another group first (`data.max_epochs`: trainer.max_epochs), else a near
        one in its own group, else a near one anywhere."""

        def leaf(key: str) -> str:
            return key.rsplit(".", 1)[-1]

        for item in self.unknown:
            name = leaf(item.key)
            known = [k for k in self.known if k != item.key and not leaf(k).startswith("_")]
            siblings = [k for k in item.siblings if not leaf(k).startswith("_")]
            close = [k for k in known if leaf(k) == name][:1]
            for pool, cutoff in ((siblings, 0.7), (known, 0.8)):
                if not close:
                    near = difflib.get_close_matches(name, [leaf(k) for k in pool], 1, cutoff)
                    close = [k for k in pool if near and leaf(k) == near[0]][:1]
            hint = f"; did you mean {close[0]}?" if close else ""
            where = item.key.rsplit(".", 1)[0] if "." in item.key else "the config"
            keys = [leaf(k) for k in siblings]
            listed = ", ".join(keys[:20]) + (f", ... ({len(keys)} keys)" if len(keys) > 20 else "")
            self.problems.append(
                f"{item.shown}: unknown key {item.key}{hint} ({where} takes: {listed or 'none'})"
            )


_EXAMPLE_TARGETS = {
    "dataset": "fus2net.data.sources.FolderSource (or choose dataset=busi, folder, manifest)",
    "optimizer": "torch.optim.Adam (or choose optimizer=adam, rmsprop, sgd)",
    "scheduler": "torch.optim.lr_scheduler.StepLR (or choose scheduler=none, cosine, step)",
    "augmentation": "albumentations.HorizontalFlip (or choose augmentation=paper, none)",
}


def _constructed(cfg: DictConfig, check: _Check) -> None:
    """The optimizer, scheduler and augmentation built once on a dummy parameter, so that
    their own checks (Adam's betas, albumentations' ranges) run before any data is read."""
    import torch
    from hydra.utils import instantiate

    def attempt(group: str, build: Callable[[], Any]) -> None:
        if group in check.failed_groups or cfg.get(group) is None:
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
            check.problem(group, f"{group}: {named} refuses these settings: {reason}")

    weight = torch.nn.Parameter(torch.zeros(1))
    attempt("optimizer", lambda: instantiate(cfg.optimizer)([weight]))
    attempt("scheduler", lambda: instantiate(cfg.scheduler)(torch.optim.SGD([weight], lr=0.1)))
    attempt("augmentation", lambda: instantiate(cfg.augmentation))


def config_problems(cfg: DictConfig) -> list[str]:
    """Every way the composed config breaks the schema, one line each (empty: it keeps it)."""
    check = _Check()
    handlers: dict[str, Callable[[Any], Any]] = {
        "dataset": lambda node: check.target(node, "dataset", "dataset"),
        "optimizer": lambda node: check.target(node, "optimizer", "optimizer"),
        "scheduler": lambda node: check.target(node, "scheduler", "scheduler"),
        "augmentation": lambda node: check.target(node, "augmentation", "augmentation"),
        "model": check.model,
        "trainer": check.trainer,
        "eval_datasets": check.eval_datasets,
    }
    check.node(TrainSchema, cfg, "", handlers=handlers)
    check.suggestions()
    _constructed(cfg, check)
    return check.problems


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every key of `cfg` the schema refuses: its value and what it
    accepts (all at once, before any data is read)."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
