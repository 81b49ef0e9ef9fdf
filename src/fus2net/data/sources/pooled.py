"""Several datasets as one (`dataset=pooled`): public sets pooled to generalise across scanners.

Each member keeps its own source and options; the pool is their union, every record tagged with
its member's name (`Record.source`), which splits stratify by, `predictions.csv` carries and
metrics are reported by. Patient groups are namespaced by member (`busi:12` is not `breast:12`);
near-duplicates are found across members like any others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from fus2net.data.records import DataError, Problem, Record
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
        first_name, first = next(iter(self.members.items()))
        self.class_names = list(first.class_names)
        for member_name, member in self.members.items():
            if list(member.class_names) != self.class_names:
                raise ValueError(
                    f"pooled: dataset.members.{member_name} has classes "
                    f"{list(member.class_names)}, dataset.members.{first_name} has "
                    f"{self.class_names}; set each member's classes to the same list, in order"
                )

    def load(self) -> list[Record]:
        """Every member's records, tagged with the member's name; one error lists every
        member's problems."""
        records: list[Record] = []
        problems: list[Problem] = []
        fixes: list[str] = []
        for member_name, member in self.members.items():
            try:
                loaded = member.load()
            except DataError as err:
                problems += [Problem(p.path, f"[{member_name}] {p.reason}") for p in err.problems]
                fixes.append(err.fix)
                continue
            records += [_tagged(record, member_name) for record in loaded]
        if problems:
            raise DataError(problems, fix=" ".join(dict.fromkeys(fixes)), source=self.name)
        return sort_records(records)

    def options(self) -> dict[str, Any]:
        return {"members": {name: member.describe() for name, member in self.members.items()}}


def _tagged(record: Record, source: str) -> Record:
    group = f"{source}:{record.group}" if record.group is not None else None
    return dataclasses.replace(record, source=source, group=group)
