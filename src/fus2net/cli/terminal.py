"""What a training job shows in the terminal: one log format (Hydra's job logging, which also
writes the job's log file), and of the libraries only their warnings and errors.

MLflow configures its own loggers when imported (its own handler and format, not propagated):
`MLFLOW_CONFIGURE_LOGGING=false` before the import leaves them to the job. The libraries' INFO
lines (four per fold about MLflow's system metrics, timm loading weights, matplotlib building
its font cache, alembic creating the store's tables) say nothing a user acts on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

# Library loggers and the lowest level of theirs a job shows (their children inherit it).
LIBRARY_LEVELS: dict[str, int] = {
    "mlflow": logging.WARNING,
    "alembic": logging.WARNING,  # MLflow's migrations of a fresh SQLite store
    "sqlalchemy": logging.WARNING,
    "huey": logging.WARNING,  # MLflow's task queue
    "timm": logging.WARNING,  # "Loading pretrained weights from ..."
    "matplotlib": logging.WARNING,  # "generated new fontManager"
    "PIL": logging.WARNING,
    "urllib3": logging.WARNING,
    "git": logging.WARNING,
    "numexpr": logging.WARNING,  # "NumExpr defaulting to N threads"
    "fsspec": logging.WARNING,
    # A WARNING on every machine with a CUDA toolkit but no CUDA device, when torch.compile
    # loads it ("No CUDA runtime is found, using CUDA_HOME=..."): true, and never a problem.
    "torch.utils.cpp_extension": logging.ERROR,
}
# Loggers MLflow gives a handler of its own (mlflow.utils.logging_utils), were it configured.
OWN_HANDLERS = ("mlflow", "alembic", "sqlalchemy.engine", "huey")


def leave_logging_to_the_job() -> None:
    """Before anything imports MLflow: it is not to configure its loggers (an exported value
    wins)."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")


def quiet_libraries(verbose: bool | str | Iterable[str] = False) -> None:
    """Library loggers at `LIBRARY_LEVELS`, into the job's handlers (one format), and Python
    warnings logged there too; loggers `hydra.verbose` names (or all, `hydra.verbose=true`)
    keep the level Hydra gave them. Idempotent: a sweep's jobs each call it."""
    if verbose is True:
        kept: set[str] = set(LIBRARY_LEVELS)
    elif not verbose:
        kept = set()
    else:
        kept = {verbose} if isinstance(verbose, str) else set(verbose)
    logging.captureWarnings(True)
    for name, level in LIBRARY_LEVELS.items():
        if not any(name == k or name.startswith(k + ".") for k in kept):
            logging.getLogger(name).setLevel(level)
    for name in OWN_HANDLERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
