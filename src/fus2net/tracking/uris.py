"""Tracking URIs: the default store, SQLite paths, normalisation, and hiding credentials.

Every `sqlite:///` URI of the project is parsed here, and every URI or text that is printed,
stored, logged or linked to passes `redact_uri` (or `without_credentials`, built on it) first:
credentials come in three forms, `user:password@`, a bare `token@` and query parameters
(`?token=`, `?access_token=`, `?password=`, `?sig=`, ...), and all three are hidden.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SQLITE = "sqlite:///"
# `scheme://userinfo@`: userinfo is `user:password` or one word, which is as often a token
# (`https://TOKEN@host`, GitHub's and many proxies' form) as a user name, so both are hidden.
_USER_INFO = re.compile(
    r"(?P<scheme>[A-Za-z][\w+.-]*://)(?P<user>[^:/?#@\s]+)(?P<password>:[^@/\s]*)?@"
)
# A query or fragment parameter whose name says it is secret: `token`, `access_token`,
# `password`, `sig` (Azure SAS), `X-Amz-Signature`, `api_key`, `client_secret`, ...
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;#][^=&#\s]*?(?:token|passw|pwd|secret|sig|key|credential|auth)[^=&#\s]*=)"
    r"(?P<value>[^&#\s'\"]+)",
    re.IGNORECASE,
)
HIDDEN = "***"
# Where a credential belongs instead of a command line (README, "A tracking server on PostgreSQL").
CREDENTIAL_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)


class TrackingError(RuntimeError):
    """The tracking store could not take what the job tried to log; the job must stop."""


def _hide_user_info(match: re.Match[str]) -> str:
    if match["password"] is not None:
        return f"{match['scheme']}{match['user']}:{HIDDEN}@"
    return f"{match['scheme']}{HIDDEN}@"


def redact_uri(text: str) -> str:
    """`text` with the credentials of every URI in it hidden: `postgresql://u:***@host/db`,
    `https://***@host` (a bare token) and `?token=***`; the one redaction of the project."""
    text = _USER_INFO.sub(_hide_user_info, text)
    return _SECRET_PARAM.sub(rf"\g<name>{HIDDEN}", text)


def has_credentials(text: str) -> bool:
    """Whether `text` holds a credential in any of the forms `redact_uri` hides."""
    return redact_uri(text) != text


def without_credentials(uri: str) -> str:
    """`uri` without its user info (`https://host/...`) and with secret query parameters
    hidden: safe to print, store or link to."""
    return _USER_INFO.sub(r"\g<scheme>", redact_uri(uri))


def redact_values(data: Any) -> Any:
    """`data` (a config as plain Python: dicts, lists, scalars) with every string redacted,
    whatever its key: a dataset URL or a sweeper's storage can carry a token as well as
    tracking.uri."""
    if isinstance(data, str):
        return redact_uri(data)
    if isinstance(data, dict):
        return {key: redact_values(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return type(data)(redact_values(value) for value in data)
    return data


def credential_overrides(args: Iterable[str]) -> list[str]:
    """The keys (as given: `tracking.uri`) of the command-line arguments holding credentials."""
    return [arg.lstrip("+~").partition("=")[0] for arg in args if has_credentials(arg)]


def credentials_refused(keys: list[str]) -> str:
    """Why a credential on the command line is refused, and where it goes instead."""
    return (
        f"{', '.join(keys)}: a credential (user:password@, token@ or a ?token=/password=/sig= "
        "parameter) on the command line is refused: Hydra saves the command line in the job's "
        ".hydra/overrides.yaml and config.yaml, and the shell in its history. Nothing was run. "
        "Give the server's address without it and the credential in the environment: "
        f"{' / '.join(CREDENTIAL_ENV)} for the tracking server, PGPASSWORD or ~/.pgpass for "
        "PostgreSQL (FUS2NET_OPTUNA_STORAGE for Optuna's storage), or any other value as "
        "${oc.env:NAME} on the command line; fus2net redacts them wherever it writes them."
    )


class _RedactingFactory:
    """A log record factory hiding credentials in every record's message, whoever logs it
    (MLflow, Hydra's Optuna sweeper printing its storage URL, ...) and wherever it goes."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it itself
            return record
        redacted = redact_uri(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return record


def redact_logs() -> None:
    """Hide credentials in every log record of this process from now on (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(factory))


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
