"""What a dataset holds, in one table: classes, sizes, modes, masks, patients, duplicates, problems.

`fus2net-data` prints it so a dataset can be checked before a long training run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fus2net.data.records import Notice, Problem, Record, empty_class_problems
from fus2net.data.sources.base import DataSource
from fus2net.data.validation import ImageInfo, drop_bad_records, inspect_records
from fus2net.images.duplicates import connected_groups, near_pairs
from fus2net.images.imageio import ImageLimits


@dataclass
class DatasetSummary:
    """Counts and problems of one loaded dataset; `ok` is False when a file is unusable."""

    description: dict[str, Any]
    class_names: list[str]
    class_counts: list[int]
    masked_counts: list[int]  # images with at least one mask, per class
    sizes: Counter[tuple[int, int]]  # (width, height) -> images
    modes: Counter[str]
    masks_per_image: Counter[int]
    n_groups: int | None  # distinct patients; None when the source has no patient ids
    duplicate_groups: list[list[int]] | None  # record indices; None when not searched
    duplicate_distance: int | None
    records: list[Record] = field(repr=False, default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def n_ungrouped(self) -> int:
        """Images without a patient id where others have one (a pool's member without ids):
        each is its own group."""
        return 0 if self.n_groups is None else sum(r.group is None for r in self.records)

    @property
    def mixed_label_duplicates(self) -> list[list[int]]:
        """Duplicate groups whose images carry different labels (label noise or leakage)."""
        groups = self.duplicate_groups or []
        return [g for g in groups if len({self.records[i].label for i in g}) > 1]


def summarize(
    source: DataSource,
    records: Sequence[Record],
    infos: Sequence[ImageInfo],
    duplicate_groups: list[list[int]] | None = None,
    duplicate_distance: int | None = None,
) -> DatasetSummary:
    """Tally what `inspect_records` found for each record (no file is read here)."""
    n_classes = len(source.class_names)
    groups = {r.group for r in records if r.group is not None}
    return DatasetSummary(
        description=source.describe(),
        class_names=list(source.class_names),
        class_counts=[sum(r.label == k for r in records) for k in range(n_classes)],
        masked_counts=[
            sum(r.label == k and bool(r.masks) for r in records) for k in range(n_classes)
        ],
        sizes=Counter(info.size for info in infos if info.size is not None),
        modes=Counter(info.mode for info in infos if info.mode is not None),
        masks_per_image=Counter(len(r.masks) for r in records),
        n_groups=len(groups) if groups else None,
        duplicate_groups=duplicate_groups,
        duplicate_distance=duplicate_distance,
        records=list(records),
        problems=[
            *empty_class_problems(records, source.class_names, "found by the source"),
            *(p for info in infos for p in info.problems),
        ],
        notices=[n for info in infos for n in info.notices],
    )


def summarize_dataset(
    source: DataSource,
    records: Sequence[Record],
    channels: int = 3,
    duplicate_distance: int | None = 4,
    limits: ImageLimits | None = None,
) -> DatasetSummary:
    """Read and decode every file once (within `limits`: the `data.*` defaults unless given),
    then look for near-duplicates among the readable images by the perceptual hashes that read
    computed (`duplicate_distance=None`: no search)."""
    search = duplicate_distance is not None
    infos = inspect_records(records, channels=channels, phash=search, limits=limits)
    duplicate_groups = None
    if search:
        readable = [i for i, info in enumerate(infos) if info.phash is not None]
        hashes = np.array([infos[i].phash for i in readable], dtype=np.uint64)
        found = connected_groups(len(readable), near_pairs(hashes, int(duplicate_distance)))
        duplicate_groups = [[readable[j] for j in group] for group in found]
    return summarize(source, records, infos, duplicate_groups, duplicate_distance)


def _table(rows: list[list[str]], left: int = 2) -> list[str]:
    """Aligned text table: the first `left` columns flush left, numbers flush right."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if c < left else cell.rjust(width)
            for c, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def _size_lines(sizes: Counter[tuple[int, int]]) -> list[str]:
    if not sizes:
        return ["Image sizes: none readable"]
    widths = [w for w, _ in sizes.elements()]
    heights = [h for _, h in sizes.elements()]
    common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(3))
    return [
        f"Image sizes (W x H): {len(sizes)} distinct; width {_span(widths)}, "
        f"height {_span(heights)}; most common: {common}"
    ]


def _duplicate_lines(summary: DatasetSummary) -> list[str]:
    if summary.duplicate_groups is None:
        return ["Duplicates: not searched"]
    groups = summary.duplicate_groups
    head = f"Duplicates (pHash distance <= {summary.duplicate_distance}): "
    if not groups:
        return [head + "none found"]
    covered = sum(len(g) for g in groups)
    lines = [head + f"{len(groups)} group(s) covering {covered} images"]
    mixed = summary.mixed_label_duplicates
    if mixed:
        lines.append(f"  {len(mixed)} group(s) mix labels (same image, different classes):")
        for group in mixed[:10]:
            names = ", ".join(
                f"{summary.records[i].image.name} [{summary.class_names[summary.records[i].label]}]"
                for i in group
            )
            lines.append(f"    {names}")
        if len(mixed) > 10:
            lines.append(f"    ... and {len(mixed) - 10} more")
    return lines


def _kept(summary: DatasetSummary) -> list[Record]:
    return drop_bad_records(summary.records, summary.problems)


def usable_records(summary: DatasetSummary) -> list[Record]:
    """What `data.on_bad_image=skip` trains on: the records none of whose files has a problem;
    none when that leaves a configured class without images (training then stops)."""
    kept = _kept(summary)
    return [] if empty_class_problems(kept, summary.class_names, "") else kept


def _skip_line(summary: DatasetSummary, on_bad_image: str) -> str:
    kept = _kept(summary)
    per_class = Counter(record.label for record in kept)
    counts = ", ".join(f"{per_class[i]} {name}" for i, name in enumerate(summary.class_names))
    left_out = f"leaves out {len(summary.records) - len(kept)} images and trains on {len(kept)}"
    empty = [name for i, name in enumerate(summary.class_names) if not per_class[i]]
    if empty:
        classes = ", ".join(f"'{name}'" for name in empty)
        stops = f"training would stop: no images left in class {classes} ({counts})"
        if on_bad_image == "skip":
            return f"data.on_bad_image=skip: {stops}. Fix: replace the files listed above."
        return (
            "Fix: replace or delete each file listed above (re-export it as PNG/JPEG); "
            f"with data.on_bad_image=skip {stops}."
        )
    if on_bad_image == "skip":
        return f"data.on_bad_image=skip: training {left_out} ({counts})."
    return (
        "Fix: replace or delete each file listed above (re-export it as PNG/JPEG), or set "
        f"data.on_bad_image=skip: training then {left_out} ({counts})."
    )


def _notice_lines(notices: list[Notice], limit: int = 20) -> list[str]:
    """Each notice by file (the first `limit`): what the decoder did that a user should know."""
    if not notices:
        return []
    lines = [f"Notices: {len(notices)} (the files are used)"]
    lines += [f"  - {n.path}: {n.text}" for n in notices[:limit]]
    if len(notices) > limit:
        lines.append(f"  ... and {len(notices) - limit} more")
    return lines


def format_summary(summary: DatasetSummary, on_bad_image: str = "error") -> str:
    """The human-readable report printed by `fus2net-data`; with problems, what
    `data.on_bad_image=skip` would leave for training."""
    info = summary.description
    lines = [f"Dataset '{info['name']}'  root: {info.get('root')}"]
    rows = [["label", "class", "images", "with mask"]]
    for label, name in enumerate(summary.class_names):
        rows.append(
            [str(label), name, str(summary.class_counts[label]), str(summary.masked_counts[label])]
        )
    rows.append(["", "total", str(sum(summary.class_counts)), str(sum(summary.masked_counts))])
    lines += _table(rows)
    lines += _size_lines(summary.sizes)
    modes = ", ".join(f"{mode} ({n})" for mode, n in summary.modes.most_common()) or "none readable"
    lines.append(f"Modes: {modes}")
    n_masks = sum(k * n for k, n in summary.masks_per_image.items())
    per_image = ", ".join(f"{n} with {k}" for k, n in sorted(summary.masks_per_image.items()))
    lines.append(f"Masks: {n_masks} for {len(summary.records)} images ({per_image or 'none'})")
    if summary.n_groups is None:
        lines.append("Groups (patients): none given, each image is its own group")
    elif summary.n_ungrouped:
        with_id = len(summary.records) - summary.n_ungrouped
        lines.append(
            f"Groups (patients): {summary.n_groups} for the {with_id} images with a patient id; "
            f"the other {summary.n_ungrouped} have none and are each their own group"
        )
    else:
        lines.append(f"Groups (patients): {summary.n_groups} for {len(summary.records)} images")
    sources = Counter(r.source for r in summary.records if r.source is not None)
    if sources:
        lines.append("Members: " + ", ".join(f"{name} {n}" for name, n in sources.items()))
    lines += _duplicate_lines(summary)
    lines += _notice_lines(summary.notices)
    if summary.ok:
        lines.append("Problems: none")
    else:
        lines.append(f"Problems: {len(summary.problems)}")
        lines += [f"  - {p.path}: {p.reason}" for p in summary.problems]
        lines.append(_skip_line(summary, on_bad_image))
    return "\n".join(lines)
