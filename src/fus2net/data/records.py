"""The record every data source yields, and the error that lists every bad file at once."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# A config key in a message (`dataset.root`, `+dataset.allow_outside_root`), not a file name
# such as `/data/dataset.csv`: what `scoped_keys` rewrites for a pool member or external set.
_DATASET_KEY = re.compile(r"(?<![\w/.\\-])dataset\.(?=[A-Za-z_])")

FIX_REPEATED = (
    "Make each image one record: give every pool member its own files (members must not "
    "overlap, nor one folder be two members), and replace a symlink to another image of the "
    "dataset by a copy, or delete it."
)


@dataclass(frozen=True)
class Record:
    """One labelled image: where it is, its class index, its lesion masks, its patient, and
    the member dataset it came from in a pooled dataset."""

    image: Path
    label: int
    masks: tuple[Path, ...] = ()
    group: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file (or folder, or CSV row) of a dataset."""

    path: str
    reason: str


@dataclass(frozen=True)
class Notice:
    """Something worth knowing about one file that does not make it unusable (only its first
    frame is used, a warning PIL raised while decoding it)."""

    path: str
    text: str


def empty_class_problems(
    records: Sequence[Record], class_names: Sequence[str], why: str
) -> list[Problem]:
    """One problem per configured class without a record: a model cannot learn (nor AUC
    measure) a class it never sees. `why` says what left the class empty."""
    present = {record.label for record in records}
    return [
        Problem(f"class '{name}' (label {label})", f"no images {why}")
        for label, name in enumerate(class_names)
        if label not in present
    ]


def scoped_keys(text: str, prefix: str) -> str:
    """`text` with each `dataset.<key>` it names moved under `prefix` (`dataset.members.busi`,
    `eval_datasets.breast`): a member's message then names the key to set on the command line."""
    return _DATASET_KEY.sub(prefix + ".", text)


def repeated_file_problems(records: Sequence[Record]) -> list[Problem]:
    """One problem per file that more than one record points at (after symlinks are resolved):
    a split would count it twice and a saved split then covers other images twice."""
    by_file: dict[Path, list[Record]] = defaultdict(list)
    for record in records:
        by_file[record.image.resolve()].append(record)
    problems = []
    for real, reached in by_file.items():
        if len(reached) > 1:
            ways = "; ".join(
                f"member {r.source}: {r.image}" if r.source is not None else str(r.image)
                for r in reached
            )
            problems.append(Problem(str(real), f"one file reached {len(reached)} times ({ways})"))
    return problems


@dataclass
class DataError(ValueError):
    """A dataset that cannot be used as it is: every offending file is named, with the fix."""

    problems: list[Problem]
    fix: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message())

    def message(self, limit: int = 50) -> str:
        head = f"{len(self.problems)} problem(s) in dataset"
        if self.source:
            head += f" '{self.source}'"
        lines = [head + ":"]
        for p in self.problems[:limit]:
            lines.append(f"  - {p.path}: {p.reason}")
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        if self.fix:
            lines.append(f"Fix: {self.fix}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.message()


def raise_if_problems(problems: Iterable[Problem], fix: str, source: str = "") -> None:
    """Raise one DataError naming every problem, or return when there is none."""
    problems = list(problems)
    if problems:
        raise DataError(problems=problems, fix=fix, source=source)
