"""Files written whole or not at all, and a full disk as one error that names the path.

A job writes large files (the disk image cache, checkpoints, model.pt) next to small ones. A
write cut short by a full disk or a signal must never leave a torn file where a later run reads
it, so every one goes to a temporary file in the same folder and is renamed over the final path
(`os.replace` is atomic on one file system; a move across file systems is a copy, and a copy
can tear). A full disk (ENOSPC, EDQUOT) anywhere in a job becomes `DiskFull`: the file, the
space it needed when known, and what is free there.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# What SQLite (the default tracking store) and MLflow's wrapping of it say instead of an errno.
_DISK_FULL_TEXT = ("database or disk is full", "no space left on device", "disk quota exceeded")


class DiskFull(Exception):
    """No room to write `path`: `need_bytes` (when known) were asked for, `free_bytes` are left."""

    def __init__(
        self, path: str | Path, need_bytes: int | None = None, free_bytes: int | None = None
    ) -> None:
        self.path = Path(path)
        self.need_bytes = need_bytes
        self.free_bytes = free_bytes
        super().__init__(self.message())

    def message(self) -> str:
        need = f"needs {_mb(self.need_bytes)}" if self.need_bytes else "needs more space"
        free = f"{_mb(self.free_bytes)} free" if self.free_bytes is not None else "free unknown"
        return (
            f"disk full: writing {self.path} {need}, its file system has {free}. Fix: free some "
            "space there (or point paths.root, paths.cache_dir, hydra.run.dir or tracking.uri "
            "elsewhere), then run the same command: finished folds are kept, the rest resumes"
        )


def _mb(n: int | None) -> str:
    return f"{(n or 0) / 1e6:.1f} MB"


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the file system of `path` (its nearest existing parent); None if unknown."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def _disk_full_cause(exc: BaseException) -> BaseException | None:
    """The full-disk error in `exc`'s chain of causes (MLflow and Lightning wrap them)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return current
        worded = isinstance(current, sqlite3.Error | OSError) or type(current).__name__ in (
            "MlflowException",
            "OperationalError",  # SQLAlchemy's, around sqlite3's
        )
        if worded and any(text in str(current).lower() for text in _DISK_FULL_TEXT):
            return current
        current = current.__cause__ or current.__context__
    return None


def as_disk_full(
    exc: BaseException,
    path: str | Path | None = None,
    need_bytes: int | None = None,
    store: str | Path | None = None,
) -> DiskFull | None:
    """`exc` as a DiskFull when a full disk caused it (else None); `path` and `need_bytes` say
    what was being written when the error itself does not, `store` which file a tracking
    store error is about."""
    if isinstance(exc, DiskFull):
        return exc
    cause = _disk_full_cause(exc)
    if cause is None:
        return None
    named = path or getattr(cause, "filename", None)
    if named is None and not isinstance(cause, OSError):
        named = store  # SQLite says "database or disk is full", not which file
    if named is None:
        return DiskFull("a file the system did not name", need_bytes)
    return DiskFull(named, need_bytes, free_bytes(named))


@contextmanager
def written_whole(path: str | Path, need_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on success it is synced and renamed onto
    `path`, on any error removed, so `path` is the old file or the new one, never a torn one.
    A full disk is raised as DiskFull naming `path` (with `need_bytes`, what was written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 would stay on the final file; 0666 less the umask, as open() does.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)  # first: frees the space the report measures
        full = as_disk_full(exc, path, need_bytes) or _short_write(exc, path, need_bytes)
        if full is not None and full is not exc:
            raise full from exc
        raise


def _short_write(exc: BaseException, path: Path, need_bytes: int | None) -> DiskFull | None:
    """numpy ("N requested and M written") and torch's zip writer (a RuntimeError) report a
    write cut short without an errno: a full disk when less is free than the write needed."""
    errno_less = isinstance(exc, OSError) and exc.errno is None
    if not (errno_less or isinstance(exc, RuntimeError)) or not need_bytes:
        return None
    free = free_bytes(path)
    return DiskFull(path, need_bytes, free) if free is not None and free < need_bytes else None


def write_text(path: str | Path, text: str) -> Path:
    """`path.write_text(text)`, whole or not at all (see `written_whole`)."""
    data = text.encode()
    with written_whole(path, len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextmanager
def locked(path: str | Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive `flock` on `path` (created, with its folder) for the block: True once
    held; with `wait=False`, False at once when another process holds it. The kernel drops the
    lock when its process dies, so a killed job never leaves a folder locked."""
    import fcntl

    lock = Path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
