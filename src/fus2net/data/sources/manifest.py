"""Datasets described by a table (one row per image): a CSV such as BUS-BRA's `bus_data.csv`,
or a spreadsheet such as BrEaST's release `.xlsx`.

Everything is configuration: which column holds the path (or an id plus a path template),
the label and how its values map to classes, the patient, the masks, and which rows to keep.
"""

from __future__ import annotations

import re
import string
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fus2net.data.records import Record, empty_class_problems
from fus2net.data.sources.base import DataSource, ProblemLog, resolve_path, sort_records
from fus2net.data.sources.sheets import TableFileError, read_table

_FIX_CSV = "Set dataset.csv=PATH to the manifest CSV (presets derive it from dataset.root)."
_FIX_COLUMNS = "Set the dataset.*_column options to columns that exist in the CSV header."
_FIX_FILE = "Fix the path in the CSV (or dataset.root / the path template), or restore the file."
_FIX_EMPTY = "Fill in the empty cells, or drop those rows from the CSV."
_FIX_ID = "Fix dataset.id_regex so it matches every id."
_FIX_CONFLICT = "Rows naming the same image must agree on label and group; fix the CSV."
_FIX_NO_ROWS = "Add one row per image below the header, or point dataset.csv at the right file."
_FIX_OUTSIDE = (
    "Fix the path in the CSV, point dataset.root at a folder that holds every image and mask, "
    "or set dataset.allow_outside_root=true to accept paths outside it."
)
_FIX_NO_CLASS = (
    "Check dataset.label_column, dataset.label_map (a value mapped to null drops its rows) and "
    "dataset.filters, or drop the class from dataset.classes."
)
_FIX_FILTERS = (
    "Set dataset.filters to {column: [values to keep]} with columns of the table, e.g. "
    "\"dataset.filters={Verification:['confirmed by biopsy']}\"."
)
# Delimiters a one-column header may hide, and how Hydra's command line takes each: quoted, in
# the shell's double quotes (a tab as the two characters \t, which dataset.delimiter accepts).
_DELIMITERS = {",": ",", ";": ";", "\t": "\\t", "|": "|"}
_DELIMITER_ALIASES = {"\\t": "\t", "tab": "\t"}


def _template_fields(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


class ManifestSource(DataSource):
    """Rows of a CSV -> records; every unknown label, missing file or empty cell is reported.

    Paths come from `image_column` (relative to `root`) or from `path_template`, a
    `str.format` string over `root`, `id` (the `id_column` value), every CSV column by name and
    the named groups of `id_regex` (e.g. "{root}/Images/{id}.png"). `label_map` maps raw label
    values to a class name or index; a value mapped to null drops the row. Rows naming the same
    image are merged into one record (their masks joined).
    """

    def __init__(
        self,
        csv: str | Path,
        classes: Sequence[str],
        label_column: str,
        image_column: str | None = None,
        id_column: str | None = None,
        path_template: str | None = None,
        id_regex: str | None = None,
        label_map: Mapping[Any, Any] | None = None,
        group_column: str | None = None,
        mask_column: str | None = None,
        mask_template: str | None = None,
        mask_separator: str = ";",
        root: str | Path | None = None,
        delimiter: str = ",",
        name: str = "manifest",
        allow_outside_root: bool = False,
        filters: Mapping[str, Sequence[Any]] | None = None,
        sheet: str | int | None = None,
    ) -> None:
        if (image_column is None) == (path_template is None):
            raise ValueError("manifest: set exactly one of dataset.image_column, path_template")
        if path_template is not None and id_column is None:
            raise ValueError("manifest: dataset.path_template needs dataset.id_column")
        if mask_column is not None and mask_template is not None:
            raise ValueError("manifest: set at most one of dataset.mask_column, mask_template")
        self.name = name
        self.csv = resolve_path(csv)
        self.root = resolve_path(root) if root is not None else self.csv.parent
        self.class_names = [str(c) for c in classes]
        self.label_column = label_column
        self.image_column = image_column
        self.id_column = id_column
        self.path_template = path_template
        self.id_regex = re.compile(id_regex) if id_regex else None
        self.label_map = self._check_label_map(label_map)
        self.group_column = group_column
        self.mask_column = mask_column
        self.mask_template = mask_template
        self.mask_separator = mask_separator
        self.delimiter = _DELIMITER_ALIASES.get(str(delimiter), str(delimiter))
        if len(self.delimiter) != 1:
            raise ValueError(
                f"manifest: dataset.delimiter={delimiter!r} must be one character, e.g. "
                "\"dataset.delimiter=';'\" (or \\t for a tab)"
            )
        self.allow_outside_root = bool(allow_outside_root)
        self.filters = self._check_filters(filters)
        self.sheet = sheet

    def _check_label_map(self, label_map: Mapping[Any, Any] | None) -> dict[str, int | None] | None:
        """Resolve every label_map target to a class index now, so bad config fails early."""
        if label_map is None:
            return None
        resolved: dict[str, int | None] = {}
        for raw, target in label_map.items():
            if target is None:
                resolved[str(raw)] = None
            elif isinstance(target, int) and 0 <= target < len(self.class_names):
                resolved[str(raw)] = target
            elif str(target) in self.class_names:
                resolved[str(raw)] = self.class_names.index(str(target))
            else:
                raise ValueError(
                    f"manifest: dataset.label_map maps {raw!r} to {target!r}, which is neither a "
                    f"class of {self.class_names} nor an index below {len(self.class_names)}"
                )
        return resolved

    @staticmethod
    def _check_filters(filters: Mapping[str, Sequence[Any]] | None) -> dict[str, list[str]]:
        """{column: values kept}, every value compared as the stripped text of the cell."""
        if not filters:
            return {}
        checked: dict[str, list[str]] = {}
        for column, values in filters.items():
            if isinstance(values, (str, int, float)):
                values = [values]
            if not isinstance(values, Sequence) or not values:
                raise ValueError(
                    f"manifest: dataset.filters.{column} must be a non-empty list of values to "
                    f"keep, got {values!r}. {_FIX_FILTERS}"
                )
            checked[str(column)] = [str(v).strip() for v in values]
        return checked

    def options(self) -> dict[str, Any]:
        return {
            "csv": str(self.csv),
            "label_column": self.label_column,
            "image_column": self.image_column,
            "id_column": self.id_column,
            "path_template": self.path_template,
            "id_regex": self.id_regex.pattern if self.id_regex else None,
            "label_map": self.label_map,
            "group_column": self.group_column,
            "mask_column": self.mask_column,
            "mask_template": self.mask_template,
            "allow_outside_root": self.allow_outside_root,
            "filters": self.filters or None,
            "sheet": self.sheet,
        }

    def load(self) -> list[Record]:
        log = ProblemLog(self.name)
        table, row_numbers = self._read_table(log)
        log.raise_if_any()
        if table.empty:
            log.add(self.csv, "the CSV has a header but no rows", _FIX_NO_ROWS)
            log.raise_if_any()
        by_image: dict[Path, tuple[Record, int]] = {}
        # each row's number in the file itself (blank lines before it counted)
        for row_number, row in zip(row_numbers, table.to_dict("records"), strict=True):
            if not self._kept_by_filters(row):
                continue
            record = self._row_record(row, row_number, log)
            if record is None:
                continue
            if record.image not in by_image:
                by_image[record.image] = (record, row_number)
                continue
            first, first_row = by_image[record.image]
            if (first.label, first.group) != (record.label, record.group):
                reason = f"rows {first_row} and {row_number} give this image different label/group"
                log.add(record.image, reason, _FIX_CONFLICT)
                continue
            masks = tuple(dict.fromkeys(first.masks + record.masks))
            merged = Record(first.image, first.label, masks, first.group)
            by_image[record.image] = (merged, first_row)
        if not log.problems:  # else the rows' own problems say why a class is empty
            records = [record for record, _ in by_image.values()]
            mapped = " through dataset.label_map" if self.label_map is not None else ""
            kept = " among the rows dataset.filters keeps" if self.filters else ""
            why = (
                f"in {self.csv.name}: no row's {self.label_column!r} value maps to it{mapped}{kept}"
            )
            for problem in empty_class_problems(records, self.class_names, why):
                log.add(problem.path, problem.reason, _FIX_NO_CLASS)
        log.raise_if_any()
        return sort_records(record for record, _ in by_image.values())

    def _kept_by_filters(self, row: dict[str, str]) -> bool:
        return all(str(row[c]).strip() in kept for c, kept in self.filters.items())

    def _read_table(self, log: ProblemLog) -> tuple[pd.DataFrame, list[int]]:
        """Read the table as strings, with each row's number in the file, and check every
        configured column and template field."""
        if not self.csv.is_file():
            log.add(self.csv, "manifest CSV does not exist", _FIX_CSV)
            return pd.DataFrame(), []
        try:
            read = read_table(self.csv, self.delimiter, self.sheet)
        except TableFileError as exc:
            log.add(self.csv, exc.reason, exc.fix)
            return pd.DataFrame(), []
        except pd.errors.EmptyDataError:
            log.add(self.csv, "the CSV is empty (no header, no rows)", _FIX_NO_ROWS)
            return pd.DataFrame(), []
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError, KeyError) as exc:
            fix = "Fix the file, dataset.delimiter (CSV) or dataset.sheet (spreadsheet)."
            log.add(self.csv, f"cannot parse the table ({exc})", fix)
            return pd.DataFrame(), []
        except (OSError, zipfile.BadZipFile) as exc:  # a torn or mislabelled .xlsx
            log.add(self.csv, f"cannot read the file ({exc})", "Restore the file.")
            return pd.DataFrame(), []
        for where, reason, fix in read.problems:
            log.add(where, reason, fix)
        table = read.frame
        table.columns = [str(c).strip() for c in table.columns]
        spreadsheet = read.sheet is not None
        if (
            not spreadsheet
            and len(table.columns) == 1
            and self._log_hidden_delimiter(table.columns[0], log)
        ):
            return pd.DataFrame(), []
        columns = set(table.columns)
        n_problems = len(log.problems)
        wanted = {
            "label_column": self.label_column,
            "image_column": self.image_column,
            "id_column": self.id_column,
            "group_column": self.group_column,
            "mask_column": self.mask_column,
        }
        for option, column in wanted.items():
            if column is not None and column not in columns:
                reason = f"dataset.{option}={column!r} is not a column (columns: {sorted(columns)})"
                log.add(self.csv, reason, _FIX_COLUMNS)
        for column in self.filters:
            if column not in columns:
                known = sorted(columns)
                reason = f"dataset.filters names {column!r}, not a column (columns: {known})"
                log.add(self.csv, reason, _FIX_FILTERS)
        id_groups = set(self.id_regex.groupindex) if self.id_regex else set()
        known_fields = columns | {"root", "id"} | id_groups
        templates = {"path_template": self.path_template, "mask_template": self.mask_template}
        for option, template in templates.items():
            unknown = _template_fields(template) - known_fields if template else set()
            if unknown:
                reason = f"dataset.{option} uses unknown field(s) {sorted(unknown)}"
                log.add(self.csv, reason + f" (known: {sorted(known_fields)})", _FIX_COLUMNS)
        if spreadsheet and len(log.problems) > n_problems:
            self._log_other_sheets(read.sheet, read.other_sheets, log)
        return table, read.rows

    def _log_other_sheets(self, sheet: str, others: dict[str, list[str]], log: ProblemLog) -> None:
        """When the configured columns are not in the sheet read, name the sheets that hold
        them: the table is on another sheet than the first (or than dataset.sheet)."""
        wanted = {
            c
            for c in (
                self.label_column,
                self.image_column,
                self.id_column,
                self.group_column,
                self.mask_column,
                *self.filters,
            )
            if c is not None
        }
        holding = [name for name, header in others.items() if wanted <= set(header)]
        which = "the first sheet" if self.sheet is None else "dataset.sheet"
        if holding:
            reason = (
                f"{which} {sheet!r} is not the table: sheet {holding[0]!r} has the configured "
                f"columns {sorted(wanted)}"
            )
            fix = f"Set dataset.sheet={holding[0]!r} (the sheet that holds the table)."
        else:
            reason = (
                f"{which} {sheet!r} lacks the configured columns, and so does every other "
                f"sheet ({sorted(others)})"
            )
            fix = "Set dataset.sheet to the sheet that holds the table, or fix the column options."
        log.add(self.csv, reason, fix)

    def _log_hidden_delimiter(self, header: str, log: ProblemLog) -> bool:
        """Log a one-column header that holds another delimiter (a ';' or tab-separated file
        read with the default ','); True when it does."""
        found = [d for d in _DELIMITERS if d != self.delimiter and d in header]
        if not found:
            return False
        shown = _DELIMITERS[found[0]]
        reason = (
            f"the header is one column {header!r}, which holds {found[0]!r}: the file is not "
            f"separated by dataset.delimiter={self.delimiter!r}"
        )
        fix = (
            f"Set dataset.delimiter to the CSV's separator; on the command line quote it for "
            f"Hydra and the shell: \"dataset.delimiter='{shown}'\"."
        )
        log.add(self.csv, reason, fix)
        return True

    def _row_record(self, row: dict[str, str], row_number: int, log: ProblemLog) -> Record | None:
        """One CSV row -> a record, or None (dropped by label_map, or problems logged)."""
        where = f"{self.csv}:row {row_number}"
        raw_label = row[self.label_column].strip()
        label = self._label_of(raw_label, where, log)
        if label is None:
            return None
        fields = self._template_values(row, where, log)
        if fields is None:
            return None
        n_problems = len(log.problems)

        if self.image_column is not None:
            cell = row[self.image_column].strip()
            if not cell:
                log.add(where, f"empty image path in column {self.image_column!r}", _FIX_EMPTY)
                return None
            listed = cell
        else:
            listed = self.path_template.format_map(fields)
        image = self._absolute(listed)
        if not self._inside_root(listed):
            log.add(image, f"image listed in {where} is outside dataset.root", _FIX_OUTSIDE)
        elif not image.is_file():
            log.add(image, f"image listed in {where} does not exist", _FIX_FILE)

        listed_masks = self._masks_of(row, fields)
        for text, mask in listed_masks:
            if not self._inside_root(text):
                log.add(mask, f"mask listed in {where} is outside dataset.root", _FIX_OUTSIDE)
            elif not mask.is_file():
                log.add(mask, f"mask listed in {where} does not exist", _FIX_FILE)
        masks = tuple(mask for _, mask in listed_masks)

        group = None
        if self.group_column is not None:
            group = row[self.group_column].strip()
            if not group:
                log.add(where, f"empty group in column {self.group_column!r}", _FIX_EMPTY)
        if len(log.problems) > n_problems:
            return None
        return Record(image=image, label=label, masks=masks, group=group)

    def _label_of(self, raw: str, where: str, log: ProblemLog) -> int | None:
        if self.label_map is not None:
            if raw in self.label_map:
                return self.label_map[raw]
            known = sorted(self.label_map)
            fix = "Add the value to dataset.label_map (map it to null to drop such rows)."
        else:
            if raw in self.class_names:
                return self.class_names.index(raw)
            known = self.class_names
            fix = "Set dataset.label_map to map the CSV's label values to classes."
        reason = f"unknown label {raw!r} in column {self.label_column!r} (known: {known})"
        log.add(where, reason, fix)
        return None

    def _template_values(
        self, row: dict[str, str], where: str, log: ProblemLog
    ) -> dict[str, str] | None:
        fields = {**row, "root": str(self.root)}
        if self.id_column is None:
            return fields
        fields["id"] = row[self.id_column].strip()
        if self.id_regex is not None:
            match = self.id_regex.search(fields["id"])
            if match is None:
                reason = f"id {fields['id']!r} does not match id_regex {self.id_regex.pattern!r}"
                log.add(where, reason, _FIX_ID)
                return None
            fields.update(match.groupdict())
        return fields

    def _masks_of(self, row: dict[str, str], fields: dict[str, str]) -> list[tuple[str, Path]]:
        """(as listed, absolute) of each mask path of a row."""
        if self.mask_template is not None:
            listed = [self.mask_template.format_map(fields)]
        elif self.mask_column is None:
            listed = []
        else:
            cells = row[self.mask_column].split(self.mask_separator)
            listed = [cell.strip() for cell in cells if cell.strip()]
        return [(text, self._absolute(text)) for text in listed]

    def _absolute(self, path: str) -> Path:
        """CSV paths are relative to `root` (default: the CSV's folder) unless absolute."""
        return (self.root / Path(path).expanduser()).resolve()

    def _inside_root(self, path: str) -> bool:
        """Whether a listed path, its `..` collapsed and its symlinks resolved, lies under the
        resolved `root`; always true with `allow_outside_root`. A CSV cannot reach files
        elsewhere (`../../secret.png`, `/etc/...`, a symlink inside the root that points out)
        unless the config allows it; a symlinked root and absolute paths through it are fine."""
        if self.allow_outside_root:
            return True
        return self._absolute(path).is_relative_to(self.root)
