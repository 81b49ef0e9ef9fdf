"""Several datasets as one (`dataset=pooled`): public sets pooled to generalise across scanners.

Each member keeps its own source and options; the pool is their union, every record tagged with
its member's name (`Record.source`), which splits stratify by, `predictions.csv` carries and
metrics are reported by. Patient groups are namespaced by member (`busi:12` is not `breast:12`);
near-duplicates are found across members like any others. A member's problems name its own keys
(`dataset.members.<name>.root`); a file two members both reach (one folder in two members,
overlapping members) is refused, not counted twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from fus2net.data.records import (
    FIX_REPEATED,
    DataError,
    Problem,
    Record,
    repeated_file_problems,
    scoped_keys,
)
from fus2net.data.sources.base import DataSource, sort_records

_FIX_MEMBERS = (
    "Add members: dataset=pooled '+dataset@dataset.members.busi=busi' "
    "'+dataset@dataset.members.breast=breast' (or a preset such as dataset=busi_breast)."
)


class PooledSource(DataSource):
    """The union of `members` (name -> a dataset source), which must share their classes."""

    def __init__(self, members: Mapping[str, DataSource], name: str = "pooled") -> None:
        if len(members) < 1:
            raise ValueError(f"pooled: dataset.members is empty. {_FIX_MEMBERS}")
        self.name = name
        self.members = dict(members)
        # A member whose classes come from its sub-folders has none while its root is missing:
        # load() names that root; only members that know their classes are compared here.
        known = {n: list(m.class_names) for n, m in self.members.items() if m.class_names}
        first_name, self.class_names = next(iter(known.items()), (name, []))
        for member_name, member in self.members.items():
            if member_name in known and known[member_name] != self.class_names:
                raise ValueError(
                    f"pooled: dataset.members.{member_name} has classes "
                    f"{list(member.class_names)}, dataset.members.{first_name} has "
                    f"{self.class_names}; set each member's classes to the same list, in order"
                )

    def load(self) -> list[Record]:
        """Every member's records, tagged with the member's name; one error lists every
        member's problems (each naming the member's keys), and every file reached twice."""
        records: list[Record] = []
        problems: list[Problem] = []
        fixes: list[str] = []
        for member_name, member in self.members.items():
            try:
                loaded = member.load()
            except DataError as err:
                scope = f"dataset.members.{member_name}"
                problems += [
                    Problem(p.path, f"[{member_name}] {scoped_keys(p.reason, scope)}")
                    for p in err.problems
                ]
                fixes.append(scoped_keys(err.fix, scope))
                continue
            records += [_tagged(record, member_name) for record in loaded]
        if not problems:
            problems = repeated_file_problems(records)
            fixes = [FIX_REPEATED] if problems else []
        if problems:
            raise DataError(problems, fix=" ".join(dict.fromkeys(fixes)), source=self.name)
        return sort_records(records)

    def options(self) -> dict[str, Any]:
        return {"members": {name: member.describe() for name, member in self.members.items()}}


def _tagged(record: Record, source: str) -> Record:
    group = f"{source}:{record.group}" if record.group is not None else None
    return dataclasses.replace(record, source=source, group=group)
