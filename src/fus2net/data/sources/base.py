"""What every dataset source shares: the interface, path handling and one-shot error reporting.

A source only looks at the file tree or the CSV (cheap, no decoding); `validation.py` decodes.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fus2net.data.records import Problem, Record, raise_if_problems
from fus2net.images.imageio import IMAGE_SUFFIXES

_DIGITS = re.compile(r"(\d+)")


class DataSource(ABC):
    """A labelled image collection chosen by the Hydra group `dataset`.

    Subclasses set `name` and `class_names` (index = label) and implement `load()`, which
    returns absolute, deterministically sorted records or raises one `DataError` naming every
    structural problem.
    """

    name: str
    class_names: list[str]
    root: Path | None = None

    @abstractmethod
    def load(self) -> list[Record]:
        """List the records (structure only; images are not decoded)."""

    def options(self) -> dict[str, Any]:
        """Source-specific settings worth recording with a run (overridden by subclasses)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Provenance for experiment tracking: what was loaded, from where, with which options."""
        return {
            "name": self.name,
            "root": str(self.root) if self.root is not None else None,
            "classes": list(self.class_names),
            "options": self.options(),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, root={str(self.root)!r})"


class ProblemLog:
    """Collects every problem of a load, each with its fix, and raises them all at once."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self._fixes: dict[str, None] = {}  # insertion-ordered set

    def add(self, path: str | Path, reason: str, fix: str) -> None:
        self.problems.append(Problem(str(path), reason))
        self._fixes[fix] = None

    def raise_if_any(self) -> None:
        raise_if_problems(self.problems, fix=" ".join(self._fixes), source=self.source)


def resolve_path(path: str | Path) -> Path:
    """Absolute path with `~` expanded; relative paths are relative to the working directory."""
    return Path(path).expanduser().resolve()


def natural_key(text: str) -> tuple:
    """Sort key that orders 'benign (2)' before 'benign (10)'."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(text))


def sort_records(records: Iterable[Record]) -> list[Record]:
    """The one deterministic order of every source: by label, then natural path order."""
    return sorted(records, key=lambda r: (r.label, natural_key(str(r.image))))


def is_image_file(path: Path) -> bool:
    """A visible file with an image suffix (hidden files such as .DS_Store are skipped)."""
    return (
        path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def check_root(root: Path, log: ProblemLog, fix: str) -> bool:
    """Log a missing or non-directory root; True when the root can be scanned."""
    if not root.exists():
        log.add(root, "dataset.root does not exist", fix)
        return False
    if not root.is_dir():
        log.add(root, "dataset.root is not a directory", fix)
        return False
    return True
