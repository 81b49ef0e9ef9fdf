"""Opening a local SQLite store that another MLflow client may be creating at that moment.

`store_lock` keeps fus2net's own jobs from migrating a fresh `mlflow.db` at once, but an
`mlflow ui`, a notebook or a script polling the store takes no such lock: MLflow creates the
tables in the first process that opens the file, statement by statement, and a job opening the
same file meanwhile runs the same migrations on a half-made schema and dies in them
("AttributeError: dimension_attributes", "table ... already exists", "No such constraint",
"database is locked", measured in 4 of 4 trials). So a job first looks at the file itself
(read-only, with `sqlite3`): while another process holds it locked, or its schema is still
changing towards MLflow's head revision, the job waits (backoff up to `MAX_DELAY_S`) instead of
migrating too; once the store is at head (or empty, or unchanged for `SETTLED_S`, which no live
migration is), it opens it, and a failure while the schema is still moving is retried. Past the
bound (`FUS2NET_STORE_WAIT_S`, default 60 s) it stops with a `TrackingError` saying which store
and what to do, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from fus2net.tracking.uris import TrackingError, sqlite_path

log = logging.getLogger(__name__)

T = TypeVar("T")

WAIT_ENV = "FUS2NET_STORE_WAIT_S"
DEFAULT_WAIT_S = 60.0
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 2.0
# A store whose schema has not moved for this long is not being migrated by a live client
# (MLflow's ~100 migrations take seconds in all): MLflow may open (or upgrade) it, and a
# failure then is the store's own, reported at once.
SETTLED_S = 8.0
READ_TIMEOUT_S = 0.5  # how long one look waits for another writer's lock


@dataclass(frozen=True)
class StoreState:
    """What a look at the SQLite file found."""

    what: str  # absent, empty, ready, locked, creating, migrating, unreadable
    revision: str = ""
    detail: str = ""

    @property
    def settled(self) -> bool:
        """Nothing suggests another client is creating the store: open it now."""
        return self.what in ("absent", "empty", "ready", "unreadable")

    def describe(self) -> str:
        return {
            "locked": "another process holds the database locked",
            "creating": "its tables are being created (no schema revision recorded yet)",
            "migrating": f"its schema is at revision {self.revision}, not yet MLflow's head",
        }.get(self.what, self.what)


def wait_bound() -> float:
    """How long a job waits for another client to finish creating its store, in seconds."""
    raw = os.environ.get(WAIT_ENV, "")
    if not raw:
        return DEFAULT_WAIT_S
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise TrackingError(f"{WAIT_ENV}={raw!r}: give a number of seconds") from None


def head_revision() -> str:
    """The schema revision this MLflow creates ('' if MLflow no longer tells)."""
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        return str(_get_latest_schema_revision())
    except Exception:  # a private helper: without it every recorded revision counts as head
        return ""


def look(database: Path, head: str) -> StoreState:
    """The state of the SQLite file `database`, read-only: never creates or locks it."""
    if not database.is_file():  # an empty file is read: another writer may hold its lock
        return StoreState("absent")
    try:
        read_only = f"{database.resolve().as_uri()}?mode=ro"
        with closing(sqlite3.connect(read_only, uri=True, timeout=READ_TIMEOUT_S)) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
            if not tables:
                return StoreState("empty")
            if "alembic_version" not in tables:
                return StoreState("creating")
            revisions = sorted(row[0] for row in con.execute("SELECT * FROM alembic_version"))
    except sqlite3.Error as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreState("locked", detail=text)
        return StoreState("unreadable", detail=text)  # MLflow's own error will say more
    if not revisions:
        return StoreState("creating")
    revision = ",".join(revisions)
    if not head or revision == head:
        return StoreState("ready", revision)
    return StoreState("migrating", revision)


def open_when_ready(
    uri: str,
    attempt: Callable[[], T],
    *,
    bound_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`attempt()` (MLflow opening the store at `uri`), once no other client is creating or
    migrating its SQLite file; retried while the schema moves, for at most `bound_s`."""
    database = sqlite_path(uri)
    if database is None:  # a server or another database: its own business
        return attempt()
    bound = wait_bound() if bound_s is None else bound_s
    head = head_revision()
    start = clock()
    delay = FIRST_DELAY_S
    seen, since = StoreState("absent"), start
    last_error: Exception | None = None
    while True:
        state = look(database, head)
        now = clock()
        if state != seen:
            seen, since = state, now
        settled = state.settled or (state.what != "locked" and now - since >= SETTLED_S)
        if settled:
            try:
                return attempt()
            except Exception as exc:
                after = look(database, head)
                if after == state:  # the schema did not move: the failure is the store's own
                    raise
                last_error = exc
                log.info("tracking store %s changed while opening it (%s): retrying", database, exc)
                seen, since = after, clock()
        if clock() - start >= bound:
            raise TrackingError(_busy_message(database, seen, bound, last_error))
        if delay == FIRST_DELAY_S:
            log.warning(
                "tracking store %s: %s; another MLflow client seems to be creating it, waiting "
                "up to %.0f s",
                database,
                seen.describe(),
                bound,
            )
        sleep(delay)
        delay = min(delay * 2, MAX_DELAY_S)


def _busy_message(database: Path, state: StoreState, bound: float, error: Exception | None) -> str:
    first_line = str(error).splitlines()[0] if error and str(error) else ""
    reason = f"; opening it failed with {type(error).__name__}: {first_line}" if error else ""
    return (
        f"the tracking store {database} was still not ready after {bound:.0f} s: "
        f"{state.describe()}{reason}. Another MLflow client (an `mlflow ui`, a script or "
        "notebook opening the same store) seems to be creating or migrating it. Let it finish "
        "(or stop it) and run the same command again, or give this job a store of its own "
        f"(tracking.uri=sqlite:///<another file>). {WAIT_ENV} sets how long a job waits for "
        f"another client (seconds; now {bound:.0f})."
    )
