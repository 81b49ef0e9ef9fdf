"""Read a manifest's table, a CSV or an `.xlsx` spreadsheet, as text cells with the file's own
row numbers, and say what a file that is not a readable table is, with the fix.

Spreadsheets are read with openpyxl directly (not through pandas) so that what pandas would
hide is named: a password-protected workbook or an old `.xls` (both OLE2 compound files), a
formula whose value was never saved, a merged cell that leaves the rows under it empty, a blank
row inside the table, and a first sheet that is not the table.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

# What both an encrypted .xlsx and an old Excel 97-2003 .xls begin with (an OLE2 compound file).
OLE2_MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")
ZIP_MAGIC = b"PK\x03\x04"
SPREADSHEET_SUFFIXES = (".xlsx", ".xlsm")
_FIX_SAVE_AS = (
    "Open it in Excel or LibreOffice and save it as .xlsx without a password (or export the "
    "table as CSV), then point dataset.csv at that file."
)
_FIX_BLANK = (
    "Delete the blank rows, so the table is one block of rows under its header (notes belong "
    "on another sheet or below nothing)."
)
_FIX_MERGED = (
    "Unmerge the cells and fill the value into every row they covered (each row must hold "
    "its own value)."
)
_FIX_FORMULA = (
    "Open the file in Excel or LibreOffice and save it again (that stores every formula's "
    "value), or replace the formulas by their values."
)
_FIX_SHEET = "Set dataset.sheet to the sheet that holds the table (its name or 0-based index)."


class TableFileError(Exception):
    """The file is not a table this reader can read: what it is, and the fix."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


@dataclass
class Table:
    """The table as text cells (empty cells ""), each row's number in the file, the problems
    of cells or rows (where, reason, fix), and each other sheet's header (spreadsheets)."""

    frame: pd.DataFrame
    rows: list[int]
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    sheet: str | None = None
    other_sheets: dict[str, list[str]] = field(default_factory=dict)


def read_table(path: Path, delimiter: str = ",", sheet: str | int | None = None) -> Table:
    """The table of `path` by what the file is (its first bytes) and its suffix; raises
    TableFileError for a file that is no readable table, and pandas' errors for a bad CSV."""
    with path.open("rb") as handle:
        head = handle.read(8)
    suffix = path.suffix.lower()
    if head.startswith(OLE2_MAGIC):
        raise TableFileError(_ole2_reason(suffix), _FIX_SAVE_AS)
    if suffix == ".xls":
        reason = "an .xls file that is not an Excel 97-2003 workbook"
        if head.startswith(ZIP_MAGIC):
            reason = "an .xlsx workbook (a zip file) named .xls"
        raise TableFileError(
            reason + ": only .xlsx/.xlsm spreadsheets and CSV are read", _FIX_SAVE_AS
        )
    if suffix in SPREADSHEET_SUFFIXES:
        if not head.startswith(ZIP_MAGIC):
            raise TableFileError(
                f"not an {suffix} workbook (it is no zip file): a torn copy, or another format",
                "Restore the file, or save it again as .xlsx (or CSV).",
            )
        return _read_spreadsheet(path, sheet)
    if head.startswith(ZIP_MAGIC) and _is_xlsx_zip(path):
        raise TableFileError(
            f"an .xlsx workbook named {suffix or 'without a suffix'}, not a delimited text file",
            "Rename it to .xlsx (or export the table as CSV).",
        )
    return _read_csv(path, delimiter)


def _ole2_reason(suffix: str) -> str:
    """What an OLE2 compound file is, by the suffix it carries."""
    if suffix in SPREADSHEET_SUFFIXES:
        return (
            f"a password-protected (encrypted) workbook: an OLE2 compound file, not the zip an "
            f"{suffix} is (or an old Excel 97-2003 .xls renamed {suffix})"
        )
    if suffix == ".xls":
        return (
            "an old Excel 97-2003 workbook (.xls), which is not read (or a password-protected "
            "workbook: both are OLE2 compound files)"
        )
    return (
        "an Excel workbook (an OLE2 compound file: an old .xls, or a password-protected .xlsx), "
        "not a delimited text file"
    )


def _is_xlsx_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return "xl/workbook.xml" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _blank(cells: list[str]) -> bool:
    return all(not cell.strip() for cell in cells)


def _read_csv(path: Path, delimiter: str) -> Table:
    """pandas reads the cells (empty lines skipped); the csv module numbers the rows as the
    file's own lines, so a row's number holds whatever blank lines or quoted line breaks
    precede it. A row of only separators (a blank spreadsheet row saved as CSV) is named."""
    frame = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False)
    rows = _csv_rows(path, delimiter, len(frame)) or list(range(2, len(frame) + 2))
    blank = {i for i, cells in enumerate(frame.values.tolist()) if _blank(cells)}
    problems = []
    if blank:
        last = max((i for i in range(len(frame)) if i not in blank), default=-1)
        inside = sorted(i for i in blank if i < last)
        if inside:
            problems.append(_blank_problem(path, [rows[i] for i in inside]))
        frame = frame.drop(index=frame.index[sorted(blank)]).reset_index(drop=True)
        rows = [r for i, r in enumerate(rows) if i not in blank]
    return Table(frame, rows, problems)


def _csv_rows(path: Path, delimiter: str, n_rows: int) -> list[int] | None:
    """The first line of each data row (pandas' rows: blank lines skipped); None when the two
    readers disagree on the count (then rows are numbered from the header)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            starts, previous = [], 0
            for record in reader:
                start, previous = previous + 1, reader.line_num
                if record and not (len(record) == 1 and not record[0].strip()):
                    starts.append(start)
    except (UnicodeDecodeError, csv.Error, OSError):
        return None
    data = starts[1:]  # the first non-blank record is the header
    return data if len(data) == n_rows else None


def _blank_problem(path: Path, rows: list[int]) -> tuple[str, str, str]:
    listed = ", ".join(map(str, rows[:20])) + (" ..." if len(rows) > 20 else "")
    where = f"{path}:row {rows[0]}" if len(rows) == 1 else f"{path}:rows {listed}"
    return where, "a blank row inside the table (every cell empty)", _FIX_BLANK


def cell_text(value: Any) -> str:
    """A spreadsheet cell as the text pandas' `dtype=str` gives it (an integer-valued float
    without `.0`, so an id typed as a number reads as it shows)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)  # a date or time too, as pandas' Timestamp prints it


def _header_of(rows: list[tuple[Any, ...]]) -> tuple[int, list[str]] | None:
    """(index, names) of the first row with a value; None for an empty sheet."""
    for index, row in enumerate(rows):
        if any(cell_text(c).strip() for c in row):
            return index, [cell_text(c).strip() for c in row]
    return None


def _read_spreadsheet(path: Path, sheet: str | int | None) -> Table:
    """The chosen sheet (default: the first) with its row numbers; blank rows inside the table,
    merged cells over its rows and formulas without saved values are problems."""
    try:
        import openpyxl
    except ImportError as exc:  # a dependency; a broken install lacks it
        raise TableFileError(
            f"cannot read the spreadsheet ({exc})", "pip install openpyxl"
        ) from None
    try:
        book = openpyxl.load_workbook(path, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise TableFileError(f"cannot read the workbook ({exc})", "Restore the file.") from None
    names = book.sheetnames
    if sheet is None:
        chosen = names[0]
    elif isinstance(sheet, int) and not isinstance(sheet, bool):
        if not 0 <= sheet < len(names):
            raise TableFileError(f"dataset.sheet={sheet} is no sheet (sheets: {names})", _FIX_SHEET)
        chosen = names[sheet]
    elif str(sheet) in names:
        chosen = str(sheet)
    else:
        raise TableFileError(f"dataset.sheet={sheet!r} is no sheet (sheets: {names})", _FIX_SHEET)
    others = {}
    for name in names:
        if name != chosen:
            found = _header_of(list(book[name].iter_rows(values_only=True)))
            others[name] = [n for n in found[1] if n] if found else []
    sheet_ = book[chosen]
    cells = list(sheet_.iter_rows())
    found = _header_of([tuple(c.value for c in row) for row in cells])
    if found is None:
        return Table(pd.DataFrame(), [], sheet=chosen, other_sheets=others)
    head_index, header = found
    data = cells[head_index + 1 :]
    texts = [[cell_text(c.value) for c in row] for row in data]
    while texts and _blank(texts[-1]):  # formatted but empty rows below the table
        texts.pop()
        data.pop()
    width = max([len(header), *(len(row) for row in texts)], default=0)
    while (
        width
        and not header[width - 1]
        and all(len(row) < width or not row[width - 1].strip() for row in texts)
    ):
        width -= 1
    columns = _column_names(header[:width] + [""] * (width - len(header)))
    numbers = [row[0].row if row else head_index + 2 + i for i, row in enumerate(data)]
    where = f"{path} (sheet {chosen!r})"
    problems = []
    blank = [numbers[i] for i, row in enumerate(texts) if _blank(row)]
    if blank:
        problems.append(_blank_problem(path, blank))
    header_row = cells[head_index][0].row if cells[head_index] else 1
    last_row = numbers[-1] if numbers else header_row
    problems += _merged_problems(sheet_, header_row, last_row, columns, where)
    problems += _formula_problems(path, chosen, data, columns, where)
    keep = [i for i, row in enumerate(texts) if not _blank(row)]
    frame = pd.DataFrame(
        [(texts[i] + [""] * width)[:width] for i in keep], columns=columns, dtype=str
    )
    return Table(frame, [numbers[i] for i in keep], problems, chosen, others)


def _column_names(header: list[str]) -> list[str]:
    """pandas' names for a header: an empty cell `Unnamed: i`, a repeated name `name.1`."""
    names: list[str] = []
    for index, name in enumerate(header):
        name = name or f"Unnamed: {index}"
        base, n = name, 0
        while name in names:
            n += 1
            name = f"{base}.{n}"
        names.append(name)
    return names


def _merged_problems(
    sheet: Any, header_row: int, last_row: int, columns: list[str], where: str
) -> list[tuple[str, str, str]]:
    """Every merged range over the table's data rows: only its first cell holds the value, the
    rows under it read as empty."""
    problems = []
    for merged in sorted(sheet.merged_cells.ranges, key=lambda m: (m.min_row, m.min_col)):
        if merged.max_row <= header_row or merged.min_row > last_row:
            continue
        column = columns[merged.min_col - 1] if merged.min_col <= len(columns) else "?"
        rows = (
            f"rows {merged.min_row}-{merged.max_row}"
            if merged.max_row > merged.min_row
            else f"row {merged.min_row}"
        )
        reason = (
            f"cells {merged.coord} ({rows}, column {column!r}) are one merged cell: only its "
            "first cell holds the value, the others read as empty"
        )
        problems.append((where, reason, _FIX_MERGED))
    return problems


def _formula_problems(
    path: Path, sheet: str, data: list[tuple[Any, ...]], columns: list[str], where: str
) -> list[tuple[str, str, str]]:
    """Cells that read as empty because they hold a formula whose value was never saved (a
    file written by a program that does not compute formulas)."""
    empty = [(c.row, c.column) for row in data for c in row if c.value is None]
    if not empty:
        return []
    import openpyxl

    formulas = openpyxl.load_workbook(path, data_only=False)[sheet]
    problems = []
    for row, column in empty:
        cell = formulas.cell(row=row, column=column)
        if cell.data_type == "f" or (isinstance(cell.value, str) and cell.value.startswith("=")):
            name = columns[column - 1] if column <= len(columns) else "?"
            reason = (
                f"cell {cell.coordinate} (row {row}, column {name!r}) is a formula without a "
                f"saved value ({cell.value!s:.40}): it reads as empty"
            )
            problems.append((where, reason, _FIX_FORMULA))
    return problems
