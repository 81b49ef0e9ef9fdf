"""One job at a time creates or migrates a local SQLite store.

MLflow builds a fresh `mlflow.db` by running its schema migrations in the first process that
opens it; two jobs opening a fresh store at the same moment both migrate, and one (or both) dies
inside alembic ("table experiments already exists", "duplicate column name"). An exclusive
`flock` on a file beside the database serialises the first open; later opens find the schema
current and take the lock only for that check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from fus2net.io.files import locked
from fus2net.tracking.uris import sqlite_path

LOCK_SUFFIX = ".lock"  # mlflow.db.lock, beside the database


@contextlib.contextmanager
def store_open_lock(uri: str) -> Iterator[None]:
    """Hold the store's lock while the block opens it (a no-op for servers and other stores)."""
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    with locked(Path(str(database) + LOCK_SUFFIX)):
        yield
