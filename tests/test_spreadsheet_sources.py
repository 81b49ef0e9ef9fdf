"""Spreadsheet manifests and row filters, and the `breast` preset (BrEaST's release as it is)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from fus2net.data.records import DataError
from fus2net.data.sources import ManifestSource

REPO = Path(__file__).resolve().parents[1]
BREAST_ROOT = REPO.parent / "shared/data/breast"
needs_breast = pytest.mark.skipif(not BREAST_ROOT.is_dir(), reason="BrEaST not beside the checkout")
SHEET = "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx"
IMAGES = "BrEaST-Lesions_USG-images_and_masks"


def _breast_like(root: Path, rows: list[tuple[int, str, str]]) -> None:
    """BrEaST's layout: the spreadsheet (CaseID, file names, Verification, Classification) and
    one folder of caseNNN.png with caseNNN_tumor.png (none for normal cases)."""
    (root / IMAGES).mkdir(parents=True)
    table = []
    for case, verification, classification in rows:
        image = f"case{case:03d}.png"
        Image.new("RGBA", (64, 48), (90, 90, 90, 255)).save(root / IMAGES / image)
        mask = "" if classification == "normal" else f"case{case:03d}_tumor.png"
        if mask:
            Image.new("RGBA", (64, 48), (255, 255, 255, 255)).save(root / IMAGES / mask)
        table.append(
            {
                "CaseID": case,
                "Image_filename": image,
                "Mask_tumor_filename": mask,
                "Mask_other_filename": "",
                "Verification": verification,
                "Classification": classification,
            }
        )
    pd.DataFrame(table).to_excel(root / SHEET, index=False)  # openpyxl, as the release's


def _compose_breast(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            config_name="train", overrides=["dataset=breast", f"dataset.root={root}", *overrides]
        )


ROWS = [
    (1, "confirmed by follow-up care", "benign"),
    (2, "confirmed by biopsy", "benign"),
    (3, "confirmed by biopsy", "malignant"),
    (4, "not applicable", "normal"),
]


def test_breast_preset_reads_the_release_spreadsheet(tmp_path: Path) -> None:
    _breast_like(tmp_path, ROWS)
    records = instantiate(_compose_breast(tmp_path).dataset).load()
    # normal dropped; CaseID (an integer cell in the sheet) is the group, as text
    assert [(r.image.name, r.label, r.group) for r in records] == [
        ("case001.png", 0, "1"),
        ("case002.png", 0, "2"),
        ("case003.png", 1, "3"),
    ]
    assert records[2].masks == (tmp_path / IMAGES / "case003_tumor.png",)


def test_filters_keep_only_the_listed_values(tmp_path: Path) -> None:
    _breast_like(tmp_path, ROWS)
    cfg = _compose_breast(tmp_path, "dataset.filters={Verification:['confirmed by biopsy']}")
    source = instantiate(cfg.dataset)
    assert [r.image.name for r in source.load()] == ["case002.png", "case003.png"]
    assert source.options()["filters"] == {"Verification": ["confirmed by biopsy"]}


def test_a_filter_that_empties_a_class_or_names_no_column_is_named(tmp_path: Path) -> None:
    _breast_like(tmp_path, ROWS)
    only = {"Verification": ["confirmed by follow-up care"]}
    source = instantiate(_compose_breast(tmp_path).dataset, filters=only)
    with pytest.raises(DataError) as info:
        source.load()
    assert [p.path for p in info.value.problems] == ["class 'malignant' (label 1)"]
    assert "among the rows dataset.filters keeps" in str(info.value)
    source = instantiate(_compose_breast(tmp_path).dataset, filters={"Verif": ["x"]})
    with pytest.raises(DataError, match=r"dataset\.filters names 'Verif', not a column"):
        source.load()
    with pytest.raises(Exception, match=r"dataset\.filters\.Verification must be a non-empty list"):
        instantiate(_compose_breast(tmp_path).dataset, filters={"Verification": []})


def test_torn_spreadsheet_and_unknown_sheet_are_named(tmp_path: Path) -> None:
    _breast_like(tmp_path, ROWS)
    sheet = tmp_path / SHEET
    cfg = _compose_breast(tmp_path)
    with pytest.raises(DataError, match=r"dataset\.sheet='No such sheet' is no sheet") as info:
        instantiate(cfg.dataset, sheet="No such sheet").load()
    assert str(sheet) in str(info.value)
    sheet.write_bytes(sheet.read_bytes()[:200])  # torn: not a zip archive any more
    with pytest.raises(DataError, match="cannot read the workbook") as info:
        instantiate(cfg.dataset).load()
    assert str(sheet) in str(info.value)


def test_spreadsheet_manifest_with_an_image_column(tmp_path: Path) -> None:
    Image.new("L", (40, 40), 80).save(tmp_path / "a.png")
    Image.new("L", (40, 40), 80).save(tmp_path / "b.png")
    table = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["benign", "malignant"]})
    table.to_excel(tmp_path / "list.xlsx", index=False)
    source = ManifestSource(tmp_path / "list.xlsx", ["benign", "malignant"], "label", "path")
    assert [(r.image.name, r.label) for r in source.load()] == [("a.png", 0), ("b.png", 1)]


@needs_breast
def test_fus2net_data_summarises_brest() -> None:
    """The real release through the CLI: 252 lesions (154 benign, 98 malignant), each a patient
    with its tumour mask; 197 biopsy-verified with the documented filter."""
    command = [sys.executable, "-m", "fus2net.cli.data", "dataset=breast"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.split() == ["0", "benign", "154", "154"] for line in lines), done.stdout
    assert any(line.split() == ["1", "malignant", "98", "98"] for line in lines), done.stdout
    assert "Groups (patients): 252 for 252 images" in done.stdout
    biopsy = "dataset.filters={Verification:['confirmed by biopsy']}"
    done = subprocess.run([*command, biopsy], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert any(line.split() == ["total", "197", "197"] for line in done.stdout.splitlines())
