"""What identifies a result: cell key, flattened config, sweep tags, code and package versions."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fus2net.tracking.mlflow_tracker import redact_uri

# Keys that never change a result: where things are written, how many workers and threads load
# and compute, which fold of the cell this job runs, where it is tracked, whether the model is
# also registered. The cell key ignores them.
# Dataset locations are left out too: the dataset's content fingerprint stands for them.
NON_RESULT_KEYS: tuple[str, ...] = (
    "cv.fold",
    "paths",
    "dataset.root",
    "dataset.csv",
    "tracking",
    "data.num_workers",
    "data.cache",
    "trainer.threads",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "evaluation.register_model",
    "evaluation.model_name",
    "hydra",
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


def resolved_container(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain Python, interpolations resolved, Hydra's own node left out."""
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    if isinstance(data.get("tracking"), dict) and data["tracking"].get("uri"):
        data["tracking"]["uri"] = redact_uri(str(data["tracking"]["uri"]))
    return data


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


def cell_key(cfg: DictConfig, dataset_fingerprint: str = "") -> str:
    """A deterministic key of the resolved configuration and data, folds and places aside."""
    flat = flatten(resolved_container(cfg))
    flat["dataset.fingerprint"] = dataset_fingerprint
    kept = {
        k: v
        for k, v in flat.items()
        if not any(k == p or k.startswith(p + ".") for p in NON_RESULT_KEYS)
    }
    blob = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def git_state(start: Path | None = None) -> dict[str, str]:
    """The commit of the code that ran, and whether the tree had uncommitted changes."""
    where = str(start or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return {"mlflow.source.git.commit": commit, "git.dirty": str(bool(dirty.strip()))}
    except (OSError, subprocess.SubprocessError):
        return {"mlflow.source.git.commit": "unknown", "git.dirty": "unknown"}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def hydra_tags(cfg_sweep: str | None) -> dict[str, str]:
    """Sweep id, the job's command-line overrides and group choices, for filtering in the UI."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return {"sweep": cfg_sweep or "none"}
    tags: dict[str, str] = {}
    multirun = hc.mode == RunMode.MULTIRUN
    if cfg_sweep:
        tags["sweep"] = cfg_sweep
    elif multirun:
        tags["sweep"] = str(hc.sweep.dir)
    else:
        tags["sweep"] = "none"
    tags["hydra.mode"] = "multirun" if multirun else "run"
    overrides = list(hc.overrides.task)
    tags["overrides"] = " ".join(redact_uri(o) if "://" in o else o for o in overrides) or "(none)"
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        tags[f"override.{key}"] = redact_uri(value) if "://" in value else value
    for group, choice in hc.runtime.choices.items():
        if not group.startswith("hydra"):
            tags[f"choice.{group}"] = str(choice)
    tags["hydra.output_dir"] = str(hc.runtime.output_dir)
    return tags
