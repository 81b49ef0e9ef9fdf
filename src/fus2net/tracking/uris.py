"""Tracking URIs: the default store, SQLite paths, normalisation, and hiding credentials.

Every `sqlite:///` URI of the project is parsed here, and every URI that is printed, stored or
linked to passes `redact_uri` or `without_credentials` first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SQLITE = "sqlite:///"
_CREDENTIALS = re.compile(r"(://[^:/@\s]+):[^@/\s]+@")
_USER_INFO = re.compile(r"://[^/@\s]+@")


class TrackingError(RuntimeError):
    """The tracking store could not take what the job tried to log; the job must stop."""


def redact_uri(text: str) -> str:
    """Hide the password of any URI in `text` (`postgresql://u:***@host/db`)."""
    return _CREDENTIALS.sub(r"\1:***@", text)


def without_credentials(uri: str) -> str:
    """`uri` without its user info (`https://host/...`): safe to print, store or link to."""
    return _USER_INFO.sub("://", uri)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (as written: maybe relative), else None."""
    return Path(uri[len(SQLITE) :]) if uri.startswith(SQLITE) else None


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the store fus2net-train writes by default (tracking=local,
    under FUS2NET_HOME or the current folder): what the reading CLIs open unless told."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(os.environ.get("FUS2NET_HOME", ".")).resolve()
    return f"{SQLITE}{root / 'mlruns' / 'mlflow.db'}"


def normalize_tracking_uri(uri: str, create: bool = True) -> str:
    """A relative `sqlite:///path` made absolute, its folder created when `create` (MLflow
    would not); a plain folder or `file:` store refused (MLflow 3.17 refuses it too)."""
    path = sqlite_path(uri)
    if path is not None:
        path = (path if path.is_absolute() else Path.cwd() / path).resolve()
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        return f"{SQLITE}{path}"
    if "://" not in uri or uri.startswith("file:"):
        raise TrackingError(
            f"tracking.uri={uri!r}: MLflow 3.17+ refuses a plain-folder store. Use "
            "tracking=local (SQLite under mlruns/) or tracking=server with an http:// URI."
        )
    return uri


def require_existing_store(uri: str) -> None:
    """A reader's check: a local store that does not exist is an error, never created."""
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise TrackingError(
            f"no tracking store at {path}: run fus2net-train from this folder first, or give "
            "the store with --tracking-uri (or MLFLOW_TRACKING_URI / FUS2NET_HOME)"
        )


UI_ADDRESS = "http://127.0.0.1:5000"  # where `ui_command` serves the UI
# MLflow 3.17's UI opens every experiment in the view its `workflowType` URL parameter names
# (else the last one chosen in the browser, else GenAI: traces and judges); this one is the
# runs table with its charts, the Models and Datasets panels.
UI_TRAINING_VIEW = "workflowType=machine_learning"


def ui_command(uri: str) -> str:
    """The command that opens the store of `uri` in the MLflow UI, on loopback only; the
    store's absolute path, so that it works from any folder."""
    path = sqlite_path(uri)
    if path is not None:
        path = path if path.is_absolute() else Path.cwd() / path
        return f"mlflow ui --backend-store-uri {SQLITE}{path} --host 127.0.0.1 --port 5000"
    return f"open {without_credentials(uri)} in a browser"


def runs_table_link(uri: str, experiment_id: str) -> str:
    """The address of the experiment's runs table in model-training mode: on the server of an
    `http(s)` store, else where `ui_command` serves it."""
    base = without_credentials(uri) if uri.startswith(("http://", "https://")) else UI_ADDRESS
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{UI_TRAINING_VIEW}"
