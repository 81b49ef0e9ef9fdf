"""Held-out test set + stratified (group) k-fold, computed once per dataset and reused from disk.

Every optimiser, ablation and baseline must see the same folds, so a split is keyed by a
fingerprint of the records (relative paths, labels, groups, file contents) plus its parameters and
saved as JSON. The grouping unit is the union of patient group and near-duplicate group, so no
patient and no duplicated lesion is ever on both sides of a split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from fus2net.data.records import (
    FIX_REPEATED,
    DataError,
    Problem,
    Record,
    repeated_file_problems,
)
from fus2net.images.duplicates import connected_groups, find_duplicate_groups, near_pairs
from fus2net.io.files import write_text

log = logging.getLogger(__name__)

SPLIT_FORMAT = 1  # bump when the split algorithm changes, so stale split files are not reused


def _common_root(records: Sequence[Record]) -> Path:
    return Path(os.path.commonpath([str(r.image.resolve().parent) for r in records]))


def record_keys(records: Sequence[Record]) -> list[str]:
    """Each image's path relative to the records' common folder: stable when the data moves."""
    root = _common_root(records)
    return [r.image.resolve().relative_to(root).as_posix() for r in records]


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def records_fingerprint(records: Sequence[Record], contents: Sequence[str] | None = None) -> str:
    """sha256 over sorted (relative path, label, group, size, content hash) of every record;
    `contents` are the files' sha256 when already computed (validation reads every file)."""
    if not records:
        raise ValueError("records_fingerprint: no records")
    if contents is None:
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
            contents = list(pool.map(_file_sha256, [r.image for r in records]))
    rows = sorted(
        (key, int(r.label), r.group or "", r.image.stat().st_size, content)
        for key, r, content in zip(record_keys(records), records, contents, strict=True)
    )
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row).encode() + b"\n")
    return digest.hexdigest()


@dataclass
class Split:
    """Record indices of the held-out test set and of each fold's validation part."""

    test: np.ndarray
    folds: list[np.ndarray]
    fingerprint: str
    params: dict[str, Any]
    duplicate_groups: list[list[int]] = field(default_factory=list)
    path: Path | None = None

    def train_pool(self) -> np.ndarray:
        """All non-test indices (what cross-validation runs on, and what a refit trains on)."""
        return np.sort(np.concatenate(self.folds)) if self.folds else np.empty(0, dtype=np.int64)

    def fold(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, validation indices) of fold k (0-based)."""
        if not 0 <= k < len(self.folds):
            raise IndexError(f"fold {k} out of range: the split has {len(self.folds)} folds")
        val = self.folds[k]
        return np.setdiff1d(self.train_pool(), val), val

    def describe(self, labels: np.ndarray) -> str:
        """Human-readable per-class counts of test and folds, and the duplicate groups."""
        labels = np.asarray(labels)
        n_classes = int(labels.max()) + 1

        def counts(idx: np.ndarray) -> str:
            return "/".join(str(c) for c in np.bincount(labels[idx], minlength=n_classes))

        lines = [f"test {len(self.test)} ({counts(self.test)} per class)"]
        lines += [f"fold {k}: val {len(v)} ({counts(v)})" for k, v in enumerate(self.folds)]
        n_dup = sum(len(g) for g in self.duplicate_groups)
        lines.append(f"{len(self.duplicate_groups)} duplicate groups ({n_dup} images)")
        return "\n".join(lines)

    def to_json(self, records: Sequence[Record] | None = None) -> str:
        """JSON text; with records, their relative paths and labels are stored to verify reuse."""
        doc: dict[str, Any] = {
            "format": SPLIT_FORMAT,
            "fingerprint": self.fingerprint,
            "params": self.params,
            "test": self.test.tolist(),
            "folds": [f.tolist() for f in self.folds],
            "duplicate_groups": self.duplicate_groups,
        }
        if records is not None:
            keys = record_keys(records)
            doc["records"] = [[k, int(r.label)] for k, r in zip(keys, records, strict=True)]
        return json.dumps(doc, indent=1)

    @classmethod
    def from_json(cls, text: str, records: Sequence[Record] | None = None) -> Split:
        """Parse to_json output; with records, check they match and map indices to their order."""
        doc = json.loads(text)
        remap = None
        if records is not None:
            if "records" not in doc:
                raise ValueError("split file holds no record paths; cannot verify it matches")
            remap = _index_map(doc["records"], records)

        def to_idx(values: list[int]) -> np.ndarray:
            idx = np.asarray(values, dtype=np.int64)
            return np.sort(remap[idx]) if remap is not None else idx

        return cls(
            test=to_idx(doc["test"]),
            folds=[to_idx(f) for f in doc["folds"]],
            fingerprint=doc["fingerprint"],
            params=doc["params"],
            duplicate_groups=sorted(to_idx(g).tolist() for g in doc["duplicate_groups"]),
        )


def _index_map(stored: list[list[Any]], records: Sequence[Record]) -> np.ndarray:
    """stored index -> index in `records`, or ValueError when the record sets differ: each
    record must be matched by exactly one stored entry."""
    keys = record_keys(records)
    current = {key: i for i, key in enumerate(keys)}
    if len(current) != len(keys):
        raise ValueError("the dataset lists one file more than once")
    if len(stored) != len(records):
        raise ValueError(f"split file has {len(stored)} records, dataset has {len(records)}")
    remap = np.empty(len(stored), dtype=np.int64)
    for j, (key, label) in enumerate(stored):
        i = current.get(key)
        if i is None or int(records[i].label) != int(label):
            raise ValueError(f"split file record {key!r} (label {label}) is not in the dataset")
        remap[j] = i
    if len(np.unique(remap)) != len(remap):
        raise ValueError("split file lists one record more than once")
    return remap


def _coverage_problem(split: Split, labels: np.ndarray) -> str | None:
    """Why `split` does not place each record exactly once across test and folds with the
    records' own counts per class; None when it does."""
    n = len(labels)
    placed = np.concatenate([split.test, *split.folds]).astype(np.int64)
    if placed.size and (placed.min() < 0 or placed.max() >= n):
        return f"indices outside the {n} records"
    seen = np.bincount(placed, minlength=n)
    if (seen > 1).any():
        return f"{int((seen > 1).sum())} records placed more than once across test and folds"
    if (seen == 0).any():
        return f"{int((seen == 0).sum())} records in neither the test set nor any fold"
    n_classes = int(labels.max()) + 1 if n else 0
    if not np.array_equal(
        np.bincount(labels[placed], minlength=n_classes), np.bincount(labels, minlength=n_classes)
    ):
        return "counts per class differ from the records'"
    return None


def grouping_units(records: Sequence[Record], duplicate_groups: list[list[int]]) -> np.ndarray:
    """Unit id per record: connected components of 'same patient' and 'duplicate image'."""
    pairs: list[tuple[int, int]] = []
    first_of_group: dict[str, int] = {}
    for i, r in enumerate(records):
        if r.group is not None:
            pairs.append((first_of_group.setdefault(r.group, i), i))
    for g in duplicate_groups:
        pairs.extend((g[0], j) for j in g[1:])
    units = np.arange(len(records))
    for component in connected_groups(len(records), pairs):
        units[component] = component[0]
    return units


def _class_problem(c: int, reason: str) -> Problem:
    return Problem(path=f"class {c}", reason=reason)


def _select_test(
    labels: np.ndarray, units: np.ndarray, targets: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Whole units, in random order, taken while they fit the per-class targets; (test, unmet)."""
    unit_ids, inverse = np.unique(units, return_inverse=True)
    unit_counts = np.zeros((len(unit_ids), len(targets)), dtype=np.int64)
    np.add.at(unit_counts, (inverse, labels), 1)
    need = targets.astype(np.int64).copy()
    chosen = np.zeros(len(unit_ids), dtype=bool)
    for u in rng.permutation(len(unit_ids)):
        if not need.any():
            break
        if np.all(unit_counts[u] <= need):
            chosen[u] = True
            need -= unit_counts[u]
    return np.flatnonzero(chosen[inverse]), need


def _test_targets(
    class_counts: np.ndarray, test_fraction: float | None, test_per_class: Sequence[int] | None
) -> np.ndarray:
    n_classes = len(class_counts)
    if test_fraction is not None and test_per_class is not None:
        raise ValueError("give data.test.fraction or data.test.per_class, not both (set one null)")
    if test_per_class is not None:
        if len(test_per_class) != n_classes:
            raise ValueError(
                f"data.test.per_class has {len(test_per_class)} entries for {n_classes} classes"
            )
        targets = np.asarray(test_per_class, dtype=np.int64)
        raise_problems = [
            _class_problem(c, f"has {n} images; data.test.per_class asks for {t}")
            for c, (n, t) in enumerate(zip(class_counts, targets, strict=True))
            if t > n or t < 0
        ]
        if raise_problems:
            raise DataError(raise_problems, fix="lower data.test.per_class or add images")
        return targets
    if test_fraction is None:
        return np.zeros(n_classes, dtype=np.int64)
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"data.test.fraction must be in [0, 1), got {test_fraction}")
    return np.round(class_counts * test_fraction).astype(np.int64)


def _strata(records: Sequence[Record], labels: np.ndarray, sources: list[str]) -> np.ndarray:
    """Per record, what splits stratify by: the label, or (label, member) in a pooled set."""
    if not sources:
        return labels
    member = np.array([sources.index(r.source) for r in records], dtype=np.int64)
    return labels * len(sources) + member


def _cv_folds(
    labels: np.ndarray,
    units: np.ndarray,
    pool: np.ndarray,
    folds: int,
    seed: int,
    strata: np.ndarray | None = None,
) -> list[np.ndarray]:
    counts = np.bincount(labels[pool], minlength=int(labels.max()) + 1)
    problems = [
        _class_problem(c, f"has {n} images for cross-validation, fewer than cv.folds={folds}")
        for c, n in enumerate(counts)
        if n < folds
    ]
    if problems:
        raise DataError(problems, fix="lower cv.folds or the test set size, or add images")
    y, groups = (labels if strata is None else strata)[pool], units[pool]
    placeholder = np.zeros((len(pool), 1))
    if len(np.unique(groups)) == len(pool):
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(placeholder, y)
    else:
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        splits = splitter.split(placeholder, y, groups=groups)
    return [np.sort(pool[val]) for _, val in splits]


def _log_duplicates(groups: list[list[int]], records: Sequence[Record], distance: int) -> None:
    log.info(
        "%d duplicate groups (%d images) at pHash distance <= %d; each kept in one fold",
        len(groups),
        sum(map(len, groups)),
        distance,
    )
    for g in groups:
        if len({records[i].label for i in g}) > 1:
            names = ", ".join(f"{records[i].image.name} (label {records[i].label})" for i in g)
            log.warning("duplicate images with different labels: %s", names)


def _stored_split(
    path: Path, records: Sequence[Record], fingerprint: str, params: dict[str, Any]
) -> Split | None:
    """The split saved at `path` when it is there, verified against `records`: made for these
    records and params, each record exactly once across test and folds, the counts per class
    the records' own. A file that fails is an error naming it (never silently recomputed nor
    used: a bad split would train every later job on part of the data)."""
    if not path.is_file():
        return None
    labels = np.array([r.label for r in records], dtype=np.int64)
    try:
        split = Split.from_json(path.read_text(), records)
        if split.fingerprint != fingerprint or split.params != params:
            raise ValueError("it was made for other records or split settings")
        reason = _coverage_problem(split, labels)
        if reason is not None:
            raise ValueError(reason)
    except (ValueError, KeyError, TypeError, IndexError, OSError) as exc:
        raise DataError(
            [Problem(str(path), f"saved split does not fit the records it is reused for: {exc}")],
            fix=f"Delete {path}; the next run computes the split again from the records.",
            source="splits",
        ) from None
    split.path = path
    log.info("reusing split %s", path)
    return split


def make_split(
    records: Sequence[Record],
    *,
    folds: int = 10,
    seed: int = 0,
    test_fraction: float | None = None,
    test_per_class: Sequence[int] | None = None,
    dedupe: bool = True,
    duplicate_distance: int = 4,
    cache_dir: Path | None = None,
    fingerprint: str | None = None,
    phashes: np.ndarray | None = None,
) -> Split:
    """Test set + k folds for `records`, loaded from `cache_dir/splits/` when already computed.

    The result does not depend on the order of `records` (computed on the sorted relative paths).
    With neither test_fraction nor test_per_class there is no held-out test set. Pass
    `fingerprint` (records_fingerprint) and `phashes` (each record's perceptual hash) when
    already computed: every file is then read once per job.
    """
    if folds < 2:
        raise ValueError(f"cv.folds must be >= 2, got {folds}")
    repeated = repeated_file_problems(records)
    if repeated:  # the sources refuse these; a split must never count a file twice either
        raise DataError(repeated, fix=FIX_REPEATED, source="splits")
    params = {
        "folds": int(folds),
        "seed": int(seed),
        "test_fraction": test_fraction,
        "test_per_class": list(test_per_class) if test_per_class is not None else None,
        "dedupe": bool(dedupe),
        "duplicate_distance": int(duplicate_distance) if dedupe else None,
        "format": SPLIT_FORMAT,
    }
    sources = sorted({r.source for r in records if r.source is not None})
    if sources:  # a pooled dataset: every member in every fold and the test set, in proportion
        params["strata"] = "label x source"
    fingerprint = fingerprint or records_fingerprint(records)
    params_hash = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "splits" / f"{fingerprint[:16]}-{params_hash}.json"
        stored = _stored_split(path, records, fingerprint, params)
        if stored is not None:
            return stored

    keys = record_keys(records)
    order = np.array(sorted(range(len(records)), key=keys.__getitem__), dtype=np.int64)
    ordered = [records[i] for i in order]
    labels = np.array([r.label for r in ordered], dtype=np.int64)
    duplicate_groups: list[list[int]] = []
    if dedupe:
        if phashes is None:
            duplicate_groups = find_duplicate_groups([r.image for r in ordered], duplicate_distance)
        else:
            pairs = near_pairs(np.asarray(phashes, dtype=np.uint64)[order], duplicate_distance)
            duplicate_groups = connected_groups(len(ordered), pairs)
        _log_duplicates(duplicate_groups, ordered, duplicate_distance)
    units = grouping_units(ordered, duplicate_groups)
    strata = _strata(ordered, labels, sources)

    rng = np.random.default_rng(seed)
    if test_per_class is None and sources:
        targets = _test_targets(np.bincount(strata), test_fraction, None)
        test, unmet_strata = _select_test(strata, units, targets, rng)
        unmet = np.bincount(np.arange(len(unmet_strata)) // len(sources), weights=unmet_strata)
        unmet = unmet.astype(np.int64)
    else:  # exact counts are per class, whatever the member
        targets = _test_targets(np.bincount(labels), test_fraction, test_per_class)
        test, unmet = _select_test(labels, units, targets, rng)
    if test_per_class is not None and unmet.any():
        raise DataError(
            [_class_problem(c, f"{n} test images short") for c, n in enumerate(unmet) if n],
            fix="patient/duplicate groups are too large for exact counts: change "
            "data.test.per_class, use data.test.fraction, or set data.dedupe=false",
        )
    if unmet.any():
        log.warning("test set is %s images per class short of %s: groups too large", unmet, targets)
    pool = np.setdiff1d(np.arange(len(ordered)), test)
    cv_folds = _cv_folds(labels, units, pool, folds, seed, strata)

    split = Split(
        test=np.sort(order[test]),
        folds=[np.sort(order[f]) for f in cv_folds],
        fingerprint=fingerprint,
        params=params,
        duplicate_groups=sorted(sorted(order[g].tolist()) for g in duplicate_groups),
        path=path,
    )
    if path is not None:
        write_text(path, split.to_json(records))
        log.info("saved split %s", path)
    return split
