"""Checks run before any training, so a bad config fails in a second with a clear message."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import urlopen

import torch
from omegaconf import DictConfig

from fus2net.models import PretrainedWeightsUnavailable, create_model, model_layout
from fus2net.tracking.uris import sqlite_path

DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


class ConfigError(ValueError):
    """An invalid configuration; the message names every offending key and the fix."""


class PreflightError(ConfigError):
    """The machine or a service is not ready for the job (tracking store, disk space)."""


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem between keys of a config that the typed schema
    accepted (`config_schema.validate_config`, which runs first and types every single key):
    what no one key can tell, all at once."""
    errors: list[str] = []
    data, cv = cfg.data, cfg.cv
    test = data.test
    if (test.fraction is None) == (test.per_class is None):
        errors.append(
            "data.test: set exactly one of data.test.fraction (e.g. 0.2) and "
            "data.test.per_class (e.g. [50,50]); set the other to null"
        )
    if cv.fold is not None and not 0 <= int(cv.fold) < int(cv.folds):
        errors.append(f"cv.fold={cv.fold}: must be in 0..{int(cv.folds) - 1} (0-based), or null")
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        errors.append(
            f"trainer.accelerator={cfg.trainer.accelerator} but no CUDA GPU is visible: "
            "use trainer=cpu"
        )
    name = cfg.model.name
    options = {k: v for k, v in cfg.model.items() if k != "pretrained_path"}  # not loaded here
    weights = cfg.model.get("pretrained_path")  # typed by model.name: may be left out
    if weights is not None and not Path(str(weights)).expanduser().is_file():
        errors.append(
            f"model.pretrained_path={weights}: no such file; point it at a state dict saved with "
            "torch.save(model.state_dict(), path), or set it to null to train from scratch"
        )
    try:  # pretrained weights are fetched here, so a missing file stops the job before any data
        model = create_model(**options, in_chans=int(data.channels), num_classes=2)
    except PretrainedWeightsUnavailable as err:
        errors.append(str(err))
        model = None
    layout = model_layout(model) if model is not None else None
    minimum = layout.min_input_size if layout is not None else 1
    if int(data.image_size) < minimum:
        errors.append(
            f"data.image_size={data.image_size}: {name} needs at least "
            f"{minimum} px; set data.image_size>={minimum}"
        )
    launcher = parallel_launcher()
    if launcher and sqlite_path(str(cfg.tracking.uri)) is not None:
        errors.append(
            f"hydra/launcher={launcher} runs jobs at the same time, and the local SQLite store "
            "(tracking=local) is not safe for parallel writers (locked database, lost runs): "
            "use tracking=server with an MLflow server on PostgreSQL (README, 'Scale-out'), or "
            "drop hydra/launcher to run the jobs one after another"
        )
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))


def parallel_launcher() -> str | None:
    """The Hydra launcher's name when this job's sweep runs jobs concurrently, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except ValueError:  # not under Hydra (tests, notebooks)
        return None
    target = str(hydra_cfg.launcher.get("_target_", ""))
    if target.endswith("BasicLauncher"):
        return None
    if "Joblib" in target and hydra_cfg.launcher.get("n_jobs") == 1:
        return None
    return str(hydra_cfg.runtime.choices.get("hydra/launcher") or target)


def check_tracking(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds when the tracking store cannot be reached (MLflow itself retries for
    minutes), before any data is prepared or any run is created."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    database = sqlite_path(uri)
    if database is not None:
        folder = database.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise PreflightError(
                f"tracking.uri: cannot write the SQLite store under {folder}: choose a writable "
                "paths.root (or FUS2NET_HOME)"
            )
        return
    if scheme not in ("http", "https", *DATABASE_PORTS) or not parts.hostname:
        return
    host = parts.hostname
    port = parts.port or {"http": 80, "https": 443, **DATABASE_PORTS}[scheme]
    where = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"  # no credentials
    try:
        if scheme in DATABASE_PORTS:
            socket.create_connection((host, port), timeout=timeout_s).close()
        else:
            urlopen(f"{where}{parts.path.rstrip('/')}/health", timeout=timeout_s).close()
    except HTTPError:
        return  # something answered: MLflow's own calls report what is wrong with it
    except (URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PreflightError(
            f"tracking.uri: cannot reach the tracking store at {where} within {timeout_s:g} s "
            f"({reason}). Start the MLflow server (README, 'Scale-out': mlflow server ...), "
            "check MLFLOW_TRACKING_URI / tracking.uri, or use tracking=local. Nothing was run."
        ) from None


def check_free_space(folder: Path, need_bytes: int, what: str, fix: str) -> None:
    """Refuse to start writing `need_bytes` (plus 10 % and 64 MB) under `folder` without room."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < need_bytes * 1.1 + 64e6:
        raise PreflightError(
            f"{what} needs {need_bytes / 1e6:.0f} MB, but {existing} has only "
            f"{free / 1e6:.0f} MB free: {fix}"
        )
