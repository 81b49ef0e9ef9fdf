"""Issue 24's data seams, through the real entry points (`fus2net-data`, `fus2net-train`): a file
that reaches the records twice, a saved split that does not fit its records, an external set
that shares images with the training pool, symlinks out of the root, spreadsheets that are not
plain tables, and a pooled member's keys in its messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
from omegaconf import open_dict
from PIL import Image

from fus2net.cli.data import main as data_main
from fus2net.config.factories import resolved_container
from fus2net.tracking.provenance import cell_key
from jobs import compose_train, run_train, sqlite_client, tiny

OLE2 = bytes.fromhex("D0CF11E0A1B11AE1")


def noise(path: Path, seed: int, size: tuple[int, int] = (40, 32)) -> Path:
    """A small image unlike every other (its own random texture)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC).save(path)
    return path


def tree(root: Path, seed: int = 0) -> Path:
    """A class-per-folder set: 3 benign, 2 malignant."""
    for i in range(3):
        noise(root / f"benign/b{i}.png", seed * 10 + i)
    for i in range(2):
        noise(root / f"malignant/m{i}.png", seed * 10 + 5 + i)
    return root


def data_check(capsys: pytest.CaptureFixture[str], *overrides: str) -> tuple[int, str, str]:
    """`fus2net-data` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        data_main(list(overrides))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def pooled(**roots: Path) -> list[str]:
    """`dataset=pooled` with one `folder` member per keyword (name=root)."""
    args = ["dataset=pooled"]
    for name, root in roots.items():
        args += [f"+dataset@dataset.members.{name}=folder", f"dataset.members.{name}.root={root}"]
    return args


# ---------------------------------------------------------------- 1. a file reached twice


def test_a_file_reached_twice_is_named_by_the_data_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tree(tmp_path / "site")
    code, _, err = data_check(capsys, *pooled(a=root, b=root))  # one folder, two members
    assert code == 1
    assert "one file reached 2 times" in err and err.count("one file reached") == 5
    assert f"member a: {root / 'benign/b0.png'}; member b: {root / 'benign/b0.png'}" in err
    assert "members must not overlap" in err

    (root / "benign/again.png").symlink_to(root / "benign/b1.png")  # a second way to one file
    code, _, err = data_check(capsys, "dataset=folder", f"dataset.root={root}")
    assert code == 1 and err.count("one file reached 2 times") == 1
    assert str(root / "benign/again.png") in err


def test_a_manifest_naming_a_file_twice_makes_one_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented rule of manifests: rows naming one file (however spelled) are one image."""
    tree(tmp_path)
    csv = tmp_path / "list.csv"
    csv.write_text(
        "path,label\nbenign/b0.png,benign\n./benign/b0.png,benign\nbenign/x/../b0.png,benign\n"
        "malignant/m0.png,malignant\n"
    )
    args = ["dataset=manifest", f"dataset.csv={csv}", "dataset.image_column=path"]
    code, out, _ = data_check(capsys, *args)
    assert code == 0
    assert any(line.split() == ["total", "2", "0"] for line in out.splitlines()), out


def test_training_refuses_a_file_reached_twice(tmp_path: Path) -> None:
    root = tree(tmp_path / "site")
    drop = ["dataset.n_images", "dataset.image_size"]
    done = run_train(tiny(*pooled(a=root, b=root), drop=drop), tmp_path, check=False)
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "one file reached 2 times" in said and "Traceback" not in said


# ------------------------------------- 1 + 2. a saved split verified; an external set's overlap


def _external_set(pool: Path, out: Path) -> None:
    """3 byte copies of pool images, 1 resized near-duplicate, 4 new images per class."""
    benign = sorted((pool / "benign").glob("*).png"))
    malignant = sorted((pool / "malignant").glob("*).png"))
    (out / "benign").mkdir(parents=True)
    (out / "malignant").mkdir(parents=True)
    shutil.copy(benign[0], out / "benign/copy0.png")
    shutil.copy(benign[1], out / "benign/copy1.png")
    shutil.copy(malignant[0], out / "malignant/copy2.png")
    Image.open(malignant[1]).resize((120, 120)).save(out / "malignant/resized.png")
    for i in range(4):
        noise(out / f"benign/new{i}.png", 100 + i, (96, 96))
        noise(out / f"malignant/new{i}.png", 200 + i, (96, 96))


def test_external_overlap_and_saved_split_checks(tmp_path: Path) -> None:
    from fus2net.synthetic.generator import generate_dataset

    pool = generate_dataset(
        tmp_path / "pool", n_images=72, image_size=128, malignant_fraction=0.333, progress=False
    )
    _external_set(pool, tmp_path / "ext")
    args = tiny(
        f"dataset.root={pool}",
        "+dataset@eval_datasets.ext=folder",
        f"eval_datasets.ext.root={tmp_path / 'ext'}",
        "evaluation.gradcam.enabled=false",
        "hydra.run.dir=out",
    )
    run_train(args, tmp_path)
    client = sqlite_client(tmp_path)
    ids = [e.experiment_id for e in client.search_experiments()]
    (cell,) = client.search_runs(ids, "tags.`fus2net.role` = 'cell'")
    assert cell.data.metrics["external/ext/n_overlap"] == 4
    assert cell.data.metrics["external/ext/n_images"] == 8  # scored without the 4 (drop)
    listed = pd.read_csv(next((tmp_path / "out").rglob("external/ext/overlap.csv")))
    assert sorted(Path(p).name for p in listed.path) == [
        "copy0.png",
        "copy1.png",
        "copy2.png",
        "resized.png",
    ]
    assert listed.match.str.startswith("near-duplicate").sum() == 1
    assert (listed.match == "same content").sum() == 3

    # A saved split that covers records twice (what repeated files left behind) is refused.
    (split_file,) = (tmp_path / ".cache/fus2net/splits").glob("*.json")
    doc = json.loads(split_file.read_text())
    doc["folds"][1].append(doc["folds"][0][0])
    split_file.write_text(json.dumps(doc))
    again = run_train([*args, "evaluation.external_overlap=keep"], tmp_path, check=False)
    said = again.stdout + again.stderr
    assert again.returncode == 2, said
    assert str(split_file) in said and "placed more than once" in said
    assert f"Delete {split_file}" in said and "Traceback" not in said

    split_file.unlink()  # the fix the message gives; `keep` scores the shared images too
    run_train([*args, "evaluation.external_overlap=keep"], tmp_path)
    kept = [
        run
        for run in client.search_runs(ids, "tags.`fus2net.role` = 'cell'")
        if run.data.params.get("evaluation.external_overlap") == "keep"
    ]
    assert kept[0].data.metrics["external/ext/n_overlap"] == 4
    assert kept[0].data.metrics["external/ext/n_images"] == 12


def test_external_overlap_at_its_default_keeps_the_cell_key() -> None:
    cfg = compose_train()
    assert cfg.evaluation.external_overlap == "drop"
    key = cell_key(resolved_container(cfg), "f")
    with open_dict(cfg):
        del cfg.evaluation["external_overlap"]  # a cell keyed before the option existed
    assert cell_key(resolved_container(cfg), "f") == key
    keep = compose_train("evaluation.external_overlap=keep")
    assert cell_key(resolved_container(keep), "f") != key


# ------------------------------------------------------------ 3. symlinks out of the root


@pytest.mark.parametrize("dataset", ["folder", "busi"])
def test_a_symlink_out_of_the_root_is_refused_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dataset: str
) -> None:
    root = tree(tmp_path / "data")
    outside = noise(tmp_path / "elsewhere/secret.png", 99)
    (root / "malignant/link.png").symlink_to(outside)
    args = [f"dataset={dataset}", f"dataset.root={root}"]
    code, _, err = data_check(capsys, *args)
    assert code == 1
    assert f"{root / 'malignant/link.png'}: a symlink that resolves outside dataset.root" in err
    assert "+dataset.allow_outside_root=true" in err
    code, out, _ = data_check(capsys, *args, "+dataset.allow_outside_root=true")
    assert code == 0
    assert any(line.split()[:3] == ["1", "malignant", "3"] for line in out.splitlines())


def test_a_symlinked_class_folder_out_of_a_pool_member_names_the_member_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tree(tmp_path / "data")
    shutil.move(root / "malignant", tmp_path / "elsewhere")
    (root / "malignant").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    code, _, err = data_check(capsys, *pooled(a=root))
    assert code == 1 and err.count("resolves outside dataset.members.a.root") == 2
    assert "+dataset.members.a.allow_outside_root=true" in err


# ---------------------------------------------------------------------- 4. spreadsheets


def _manifest_args(table: Path, *extra: str) -> list[str]:
    return ["dataset=manifest", f"dataset.csv={table}", "dataset.image_column=path", *extra]


def _images(folder: Path) -> None:
    noise(folder / "a.png", 1)
    noise(folder / "b.png", 2)
    noise(folder / "c.png", 3)


def _sheet(path: Path, rows: list[list[object]], title: str = "Sheet") -> openpyxl.Workbook:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = title
    for row in rows:
        sheet.append(row)
    book.save(path)
    return book


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("list.xlsx", ["a password-protected (encrypted) workbook", "old Excel 97-2003 .xls"]),
        ("list.xls", ["an old Excel 97-2003 workbook (.xls)", "or a password-protected"]),
        ("list.csv", ["an Excel workbook (an OLE2 compound file", "not a delimited text file"]),
    ],
)
def test_ole2_files_say_what_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, says: list[str]
) -> None:
    (tmp_path / name).write_bytes(OLE2 + bytes(504))
    code, _, err = data_check(capsys, *_manifest_args(tmp_path / name))
    assert code == 1 and "pip install" not in err and "unknown label" not in err
    for text in [*says, "save it as .xlsx without a password (or export the table as CSV)"]:
        assert text in err, err


def test_an_xls_that_is_text_is_not_read_as_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _images(tmp_path)
    (tmp_path / "list.xls").write_text("path,label\na.png,benign\nb.png,malignant\n")
    code, _, err = data_check(capsys, *_manifest_args(tmp_path / "list.xls"))
    assert code == 1 and "an .xls file that is not an Excel 97-2003 workbook" in err


def test_formulas_merged_cells_and_blank_rows_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _images(tmp_path)
    table = tmp_path / "list.xlsx"
    rows = [
        ["path", "label"],
        ["a.png", '=IF(1=1,"benign","malignant")'],  # openpyxl saves no value for it
        ["b.png", "benign"],
        ["c.png", None],  # under the merged B3:B4
        [None, None],  # blank, inside the table
        ["a.png", "benign"],
    ]
    book = _sheet(table, rows)
    book.active.merge_cells("B3:B4")
    book.save(table)
    code, _, err = data_check(capsys, *_manifest_args(table))
    assert code == 1 and "unknown label" not in err, err
    assert "cell B2 (row 2, column 'label') is a formula without a saved value" in err
    assert "save it again (that stores every formula's value)" in err
    assert "cells B3:B4 (rows 3-4, column 'label') are one merged cell" in err
    assert "Unmerge the cells and fill the value into every row" in err
    assert f"{table}:row 5: a blank row inside the table" in err
    assert "Delete the blank rows" in err


def test_a_first_sheet_that_is_not_the_table_names_the_sheet_that_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _images(tmp_path)
    table = tmp_path / "list.xlsx"
    book = _sheet(table, [["About this file"], ["written by the scanner export"]], "Notes")
    data = book.create_sheet("Data")
    for row in [["path", "label"], ["a.png", "benign"], ["b.png", "malignant"]]:
        data.append(row)
    book.save(table)
    code, _, err = data_check(capsys, *_manifest_args(table))
    assert code == 1
    assert "the first sheet 'Notes' is not the table: sheet 'Data' has the configured" in err
    assert "Set dataset.sheet='Data'" in err
    code, _, err = data_check(capsys, *_manifest_args(table, "dataset.sheet=Data"))
    assert code == 0, err


def test_row_numbers_are_the_files_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _images(tmp_path)
    csv = tmp_path / "list.csv"
    csv.write_text("\npath,label\n\na.png,benign\n\n\nb.png,benign\nc.png,maybe\n")
    code, _, err = data_check(capsys, *_manifest_args(csv))
    assert code == 1 and f"{csv}:row 8: unknown label 'maybe'" in err, err

    table = tmp_path / "list.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    for row, values in [(3, ["path", "label"]), (4, ["a.png", "benign"]), (5, ["b.png", "x"])]:
        for column, value in enumerate(values, start=1):
            sheet.cell(row=row, column=column, value=value)
    book.save(table)
    code, _, err = data_check(capsys, *_manifest_args(table))
    assert code == 1 and f"{table}:row 5: unknown label 'x'" in err, err

    csv.write_text("path,label\na.png,benign\n,\nb.png,malignant\n")  # a blank sheet row as CSV
    code, _, err = data_check(capsys, *_manifest_args(csv))
    assert code == 1 and f"{csv}:row 3: a blank row inside the table" in err, err


# ------------------------------------------------------ 5. a pooled member's missing root


def test_a_members_missing_root_names_the_members_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    busi = ["+dataset@dataset.members.c=busi", f"dataset.members.c.root={tmp_path / 'lost'}"]
    args = [*pooled(a=tmp_path / "gone", b=tree(tmp_path / "b")), *busi]
    code, _, err = data_check(capsys, *args)
    assert code == 1
    assert f"{tmp_path / 'gone'}: [a] dataset.members.a.root does not exist" in err
    assert f"{tmp_path / 'lost'}: [c] dataset.members.c.root does not exist" in err
    assert "Set dataset.members.a.root=PATH" in err
    assert "Point dataset.members.c.root (or the FUS2NET_BUSI_ROOT" in err
    assert "dataset.root" not in err
