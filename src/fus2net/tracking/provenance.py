"""What identifies a result: cell key, flattened config, sweep tags, code and package versions."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

from fus2net.tracking import schema
from fus2net.tracking.uris import redact_uri

# Keys that never change a result: where things are written, how many workers and threads load
# and compute, whether the network runs compiled (the same maths, rounded differently, as with
# another thread count), which fold of the cell this job runs, where it is tracked, whether the
# model is also registered, whether a progress bar is drawn. The cell key ignores them.
# Dataset locations are left out too: the dataset's content fingerprint stands for them.
# Every other key is one something reads: the typed schema (fus2net.config.validate)
# refuses unknown keys, `+new.key=1` included, and its open namespaces take only what is passed
# on (a target's own arguments, an `eval_datasets` entry).
NON_RESULT_KEYS: tuple[str, ...] = (
    "cv.fold",
    "paths",
    "dataset.root",
    "dataset.csv",
    "dataset.progress",  # the synthetic generator's progress bar (a SyntheticSource argument)
    "tracking",
    "data.num_workers",
    "data.cache",
    "trainer.threads",
    "trainer.compile",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "evaluation.register_model",
    "evaluation.model_name",
    "hydra",
)

# Keys read only when a cell is scored, after every fold is trained (fus2net.clinical):
# external sets, Grad-CAM, the ECE's bins, the operating point's target, the bootstrap, the
# clinical step itself. They leave the cell key, so that asking a finished cell for more of them
# scores it again from its stored models instead of training it (`evaluation_asked`). Those
# that change what a cell's models are or what its scores mean stay keyed: `evaluation.tta`
# (validation scores checkpoints), `evaluation.calibration` (the package's probabilities),
# `evaluation.adabn` and `evaluation.external_overlap` (what an external AUC measures).
EVALUATION_ONLY_KEYS: tuple[str, ...] = (
    "eval_datasets",
    "evaluation.enabled",
    "evaluation.calibration_bins",
    "evaluation.target_sensitivity",
    "evaluation.bootstrap",
    "evaluation.gradcam",
)

# Keys that left the result set after cells had been keyed with them, each with the one value it
# held then (for the evaluation-only keys, their default: `eval_datasets`, empty, hashed nothing):
# the key hashes that value whatever the config says, so those cells keep their keys (and are
# found finished, not retrained) across the upgrade. A cell keyed at another value is found by
# its former key instead (`legacy_cell_key`).
KEYED_AT_FORMER_VALUE: dict[str, object] = {
    "trainer.compile": False,
    "evaluation.enabled": True,
    "evaluation.calibration_bins": 15,
    "evaluation.target_sensitivity": 0.95,
    "evaluation.bootstrap": 1000,
    "evaluation.gradcam.enabled": True,
    "evaluation.gradcam.n_images": 32,
    "evaluation.gradcam.layer": "auto",
    "evaluation.gradcam.target": "predicted",
    "evaluation.gradcam.pointing_tolerance": 0,
}

# Result keys added after cells had been keyed without them, each with the value that does what
# the code did before it existed: at that value the key is left out of the hash, so earlier
# cells keep their keys (and are found finished); any other value makes a new cell.
KEYED_ONLY_WHEN_SET: dict[str, object] = {
    "evaluation.tta": "none",
    "data.resize": "stretch",
    "model.pretrained_source": "hub",
    "cv.holdout_source": None,
    "evaluation.adabn": False,
    "evaluation.external_overlap": "drop",
    "regularization.layer_decay": None,
}

# The same location keys of each member of a pooled dataset (`dataset.members.<name>.root`):
# the pooled records' fingerprint stands for every member's content.
NON_RESULT_MEMBER_KEYS: tuple[str, ...] = ("root", "csv", "progress")


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def is_evaluation_only(key: str) -> bool:
    """Whether `key` is read only when a finished cell is scored (`EVALUATION_ONLY_KEYS`)."""
    return _under(key, EVALUATION_ONLY_KEYS)


def _is_result_key(key: str) -> bool:
    if _under(key, NON_RESULT_KEYS) or is_evaluation_only(key):
        return False
    parts = key.split(".")
    return not (
        len(parts) == 4
        and parts[:2] == ["dataset", "members"]
        and parts[3] in NON_RESULT_MEMBER_KEYS
    )


PACKAGES: tuple[str, ...] = (
    "fus2net",
    "torch",
    "torchvision",
    "pytorch-lightning",
    "torchmetrics",
    "hydra-core",
    "omegaconf",
    "mlflow",
    "scikit-learn",
    "albumentations",
    "numpy",
    "pillow",
)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"data": {"image_size": 128}}` -> `{"data.image_size": 128}`; lists kept as JSON."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def cell_key(config: Mapping[str, Any], dataset_fingerprint: str = "") -> str:
    """A deterministic key of the configuration `config` (plain Python, resolved, credentials
    hidden) and data, folds, places and evaluation-only settings aside."""
    flat = flatten(config)
    flat["dataset.fingerprint"] = dataset_fingerprint
    kept = {k: v for k, v in flat.items() if _is_result_key(k)}
    kept.update({k: v for k, v in KEYED_AT_FORMER_VALUE.items() if k in flat})
    return _hashed(kept)


def legacy_cell_key(config: Mapping[str, Any], dataset_fingerprint: str = "") -> str:
    """The key versions before `EVALUATION_ONLY_KEYS` left the key gave this configuration
    (those keys hashed at their values): a cell they trained is found by it, and keeps it."""
    flat = flatten(config)
    flat["dataset.fingerprint"] = dataset_fingerprint
    kept = {k: v for k, v in flat.items() if _is_result_key(k) or is_evaluation_only(k)}
    former = {k: v for k, v in KEYED_AT_FORMER_VALUE.items() if not is_evaluation_only(k)}
    kept.update({k: v for k, v in former.items() if k in flat})
    return _hashed(kept)


def _hashed(kept: dict[str, Any]) -> str:
    for key, former in KEYED_ONLY_WHEN_SET.items():
        if kept.get(key, former) == former:
            kept.pop(key, None)
    blob = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# The tag of a cell run holding the evaluation-only settings it was last scored with (JSON of
# `evaluation_settings`); a cell scored before it existed is read from its params instead.
SCORED_WITH_TAG = "fus2net.scored_with"
# The tag of a cell found by its `legacy_cell_key`: the key this version gives it, so that later
# jobs (whatever their evaluation-only settings) find it by that too, while it keeps its own.
KEY_ALIAS_TAG = "fus2net.cell_key_alias"


def evaluation_settings(values: Mapping[str, Any]) -> dict[str, str]:
    """The evaluation-only settings among flattened config `values` (a job's, or a cell run's
    params), each as its param reads, an `eval_datasets` entry as one digest of its keys: what
    a finished cell records it was scored with, and a re-run compares (`evaluation_asked`)."""
    settings: dict[str, str] = {}
    external: dict[str, dict[str, str]] = {}
    for key, value in values.items():
        if not is_evaluation_only(key):
            continue
        text = redact_uri(str(value))
        parts = key.split(".", 2)
        if parts[0] == "eval_datasets" and len(parts) == 3:
            if parts[2] != "progress":  # a generator's progress bar changes no score
                external.setdefault(parts[1], {})[parts[2]] = text
        else:
            settings[key] = text
    for name, entry in external.items():
        blob = json.dumps(entry, sort_keys=True).encode()
        settings[f"eval_datasets.{name}"] = hashlib.sha256(blob).hexdigest()[:16]
    return settings


def evaluation_asked(now: Mapping[str, str], scored: Mapping[str, str]) -> dict[str, str]:
    """The settings of `now` that a cell scored with `scored` lacks (both `evaluation_settings`):
    a new or changed external set or setting. Nothing while the clinical step is off
    (`evaluation.enabled=false`), no Grad-CAM setting while Grad-CAM is, and an external set
    left out asks nothing (its scores stay on the cell)."""
    if now.get("evaluation.enabled") == "False":
        return {}
    gradcam_off = now.get("evaluation.gradcam.enabled") == "False"
    return {
        k: v
        for k, v in now.items()
        if scored.get(k) != v and not (gradcam_off and k.startswith("evaluation.gradcam."))
    }


def git_state(start: Path | None = None) -> dict[str, str]:
    """MLflow's source tags (commit, branch, remote) of the code that ran, as MLflow's own git
    helpers read them, and whether the tree had uncommitted changes; "unknown" outside git."""
    from mlflow.utils.git_utils import get_git_branch, get_git_commit, get_git_repo_url

    where = str(start or Path(__file__).resolve().parent)
    commit = get_git_commit(where)
    if commit is None:
        return {schema.GIT_COMMIT: "unknown", schema.GIT_DIRTY: "unknown"}
    tags = {schema.GIT_COMMIT: commit, schema.GIT_DIRTY: str(_is_dirty(where))}
    for key, value in (
        (schema.GIT_BRANCH, get_git_branch(where)),
        (schema.GIT_REPO_URL, get_git_repo_url(where)),
    ):
        if value:
            tags[key] = redact_uri(value)
    return tags


def _is_dirty(where: str) -> bool | str:
    try:
        import git  # GitPython, which MLflow's git helpers use too

        return git.Repo(where, search_parent_directories=True).is_dirty(untracked_files=False)
    except Exception:  # no git executable, a broken repository
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def override_key(item: str) -> str:
    """The key of a command-line override as the `override.<key>` tags spell it."""
    return item.lstrip("+~").partition("=")[0]


# Keys whose values are places on disk (`dataset.root`, `dataset.members.a.csv`,
# `model.checkpoint_path`, `eval_datasets.x.image_dir`): a run's name never shows them.
PATH_KEYS = ("root", "csv", "path", "dir", "file")
PATH_KEY_ENDINGS = tuple(f"_{name}" for name in PATH_KEYS)
# A value that reads as a place: absolute, home, `./`, `../`, any with a separator
# (`data/busi`, `${paths.data_dir}/x`, `C:\\x`), a URL, or a file name with a data or model suffix.
_PATH_VALUE = re.compile(
    r"^~|[/\\]|://"
    r"|\.(csv|tsv|json|ya?ml|txt|db|sqlite|pt|pth|ckpt|safetensors|onnx|png|jpe?g|xlsx?)$",
    re.IGNORECASE,
)


def is_path_override(key: str, value: str) -> bool:
    """Whether a command-line override names a place on disk (by its key or its value)."""
    last = key.rsplit(".", 1)[-1].lower()
    return last in PATH_KEYS or last.endswith(PATH_KEY_ENDINGS) or bool(_PATH_VALUE.search(value))


def readable_key(key: str) -> str:
    """How a run name shows an override's key: a group placed elsewhere by Hydra's `@`
    (`+dataset@dataset.members.a`, `+dataset@eval_datasets.busbra`) by where it goes, without
    the group's own name leading it (`members.a`, `eval_datasets.busbra`); others as given."""
    group, at, package = key.partition("@")
    if not at:
        return key
    package = package.removeprefix("_global_.")
    if not package or package.startswith("_"):  # `_global_`, `_here_`, `_group_`
        return group
    return package.removeprefix(group.replace("/", ".") + ".") or group


def readable_keys(overrides: str) -> dict[str, str]:
    """The readable key (`readable_key`) of each override of an `overrides` tag, by the name
    its `override.<name>` tag has (`dataset_dataset.members.a` -> `members.a`)."""
    try:
        items = shlex.split(overrides)
    except ValueError:  # an unbalanced quote: the keys still stand before each `=`
        items = overrides.split()
    keys = [override_key(item) for item in items if "=" in item]
    return {_tag_name(key): readable_key(key) for key in keys}


def _tag_name(key: str) -> str:
    """The `<name>` of the `override.<name>` tag of override key `key`."""
    return schema.tag_key(f"{schema.OVERRIDE_PREFIX}{key}").removeprefix(schema.OVERRIDE_PREFIX)


class NamedOverride(NamedTuple):
    """An override as a run's name shows it."""

    tag: str  # `<name>` of its `override.<name>` tag, as `fus2net.swept` keys are compared
    key: str  # readable: `members.a` for `+dataset@dataset.members.a`
    value: str
    group: bool  # a config group's choice (`dataset=pooled`): what a name keeps longest

    @property
    def item(self) -> str:
        return f"{self.key}={self.value}"


def named_overrides(tags: Mapping[str, str]) -> list[NamedOverride]:
    """Each override in `tags` that a run's name shows: those that change results and name no
    place on disk, in the tags' order."""
    readable = readable_keys(tags.get(schema.OVERRIDES, ""))
    named = []
    for tag, value in tags.items():
        name = tag.removeprefix(schema.OVERRIDE_PREFIX)
        if name == tag or not _is_result_key(name):
            continue
        key = readable.get(name, name)
        if not is_path_override(key, value) and not is_path_override(name, value):
            group = f"{schema.CHOICE_PREFIX}{name}" in tags
            named.append(NamedOverride(name, key, value, group))
    return named
