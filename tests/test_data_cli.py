"""`fus2net-data`: same overrides as training, a readable summary, exit 1 naming every bad file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fus2net.cli import config_dir
from fus2net.cli.data import check_dataset
from jobs import compose_train

REPO = Path(__file__).resolve().parents[1]


def save(path: Path, size: tuple[int, int] = (40, 32), value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)
    return path


def good_tree(root: Path) -> Path:
    """benign: 2 images (one masked), malignant: 1 image; one image copied across classes."""
    save(root / "benign/a.png", value=40)
    save(root / "benign/a_mask.png", value=255)
    noise = np.random.default_rng(0).integers(0, 256, (32, 40), dtype=np.uint8)
    Image.fromarray(noise).save(root / "benign/b.png")
    save(root / "malignant/c.png", value=40)  # the same picture as benign/a.png
    return root


def bad_tree(root: Path) -> list[Path]:
    good_tree(root)
    bad = [root / "benign/zero.png", root / "malignant/text.png", root / "malignant/cut.png"]
    bad[0].write_bytes(b"")
    bad[1].write_text("not an image")
    bad[2].write_bytes((root / "benign/b.png").read_bytes()[:60])
    return bad


def run_cli(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "fus2net.cli.data", *overrides]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_config_dir_is_the_repos() -> None:
    assert Path(config_dir()) == REPO / "conf" and (REPO / "conf" / "train.yaml").is_file()


def test_summary_of_good_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = compose_train("dataset=folder", f"dataset.root={good_tree(tmp_path)}", "data.channels=1")
    assert check_dataset(cfg) == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines()[1:4]]
    assert table == [
        ["label", "class", "images", "with", "mask"],
        ["0", "benign", "2", "1"],
        ["1", "malignant", "1", "0"],
    ]
    assert "40x32 (3)" in out and "Modes: L (3)" in out
    assert "Masks: 1 for 3 images (2 with 0, 1 with 1)" in out
    assert "1 group(s) covering 2 images" in out and "1 group(s) mix labels" in out
    assert "Problems: none" in out


def test_bad_files_all_named_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = bad_tree(tmp_path)
    cfg = compose_train("dataset=folder", f"dataset.root={tmp_path}")
    assert check_dataset(cfg) == 1
    out = capsys.readouterr().out
    assert "Problems: 3" in out and all(str(path) in out for path in bad)
    # good_tree holds 2 benign + 1 malignant; bad_tree adds 1 benign and 2 malignant bad files
    assert "or set data.on_bad_image=skip: training then leaves out 3 images" in out
    assert "and trains on 3 (2 benign, 1 malignant)." in out


def test_skip_previews_what_training_leaves_out_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_tree(tmp_path)
    cfg = compose_train("dataset=folder", f"dataset.root={tmp_path}", "data.on_bad_image=skip")
    assert check_dataset(cfg) == 0
    out = capsys.readouterr().out
    assert "Problems: 3" in out
    assert "data.on_bad_image=skip: training leaves out 3 images and trains on 3 (2 benign" in out


def test_structural_error_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = compose_train("dataset=busi", f"dataset.root={tmp_path / 'missing'}")
    assert check_dataset(cfg) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "missing") in err and "Fix:" in err


def test_incomplete_config_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_dataset(compose_train("dataset=folder")) == 1  # dataset.root is ???
    assert "root" in capsys.readouterr().err


def test_console_script_good_then_bad(tmp_path: Path) -> None:
    """One subprocess each way: exit codes, every bad file named, no traceback, no files written."""
    data, cwd = tmp_path / "data", tmp_path / "cwd"
    cwd.mkdir()
    good = run_cli(cwd, "dataset=folder", f"dataset.root={good_tree(data)}", "data.channels=1")
    assert good.returncode == 0, good.stderr
    assert "malignant" in good.stdout and "Problems: none" in good.stdout

    bad = bad_tree(data / "more")
    result = run_cli(cwd, "dataset=folder", f"dataset.root={data / 'more'}")
    assert result.returncode == 1
    assert all(str(path) in result.stdout for path in bad)
    assert "Traceback" not in result.stdout + result.stderr
    assert list(cwd.iterdir()) == []  # no Hydra output folder, no log file


def test_console_script_structural_error(tmp_path: Path) -> None:
    save(tmp_path / "benign/x_mask.png")
    result = run_cli(tmp_path, "dataset=folder", f"dataset.root={tmp_path}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(tmp_path / "benign/x_mask.png") in result.stderr
    assert "mask without its image" in result.stderr


# --------------------------------------------------------------------------- datasets


def manifest_tree(root: Path, csv_text: str) -> list[str]:
    """Two images under root/img and list.csv beside them: the overrides to check it."""
    save(root / "img/a.png", value=40)
    save(root / "img/b.png", value=200)
    (root / "list.csv").write_text(csv_text)
    return ["dataset=manifest", f"dataset.csv={root / 'list.csv'}", "dataset.image_column=path"]


def test_console_script_empty_class_after_label_map_exit_1(tmp_path: Path) -> None:
    args = manifest_tree(tmp_path, "path,label\nimg/a.png,B\nimg/b.png,N\n")
    result = run_cli(tmp_path, *args, "dataset.label_map={B:benign,M:malignant,N:null}")
    assert result.returncode == 1
    assert "class 'malignant' (label 1): no images in list.csv" in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_header_without_rows_exit_1(tmp_path: Path) -> None:
    result = run_cli(tmp_path, *manifest_tree(tmp_path, "path,label\n"))
    assert result.returncode == 1
    assert f"{tmp_path / 'list.csv'}: the CSV has a header but no rows" in result.stderr


def test_console_script_semicolon_csv_names_the_quoting(tmp_path: Path) -> None:
    args = manifest_tree(tmp_path, "path;label\nimg/a.png;benign\nimg/b.png;malignant\n")
    result = run_cli(tmp_path, *args)
    assert result.returncode == 1
    assert "the header is one column 'path;label'" in result.stderr
    assert "\"dataset.delimiter=';'\"" in result.stderr
    fixed = run_cli(tmp_path, *args, "dataset.delimiter=';'")  # as the shell passes it on
    assert fixed.returncode == 0, fixed.stderr
    assert "Problems: none" in fixed.stdout


def test_console_script_paths_outside_root(tmp_path: Path) -> None:
    save(tmp_path / "other/c.png")
    args = manifest_tree(
        tmp_path / "data", "path,label\nimg/a.png,benign\n../other/c.png,malignant\n"
    )
    result = run_cli(tmp_path, *args)
    assert result.returncode == 1
    assert f"{tmp_path / 'other/c.png'}: image listed in" in result.stderr
    assert "is outside dataset.root" in result.stderr
    assert "dataset.allow_outside_root=true" in result.stderr
    allowed = run_cli(tmp_path, *args, "dataset.allow_outside_root=true")
    assert allowed.returncode == 0, allowed.stderr


def test_skip_that_empties_a_class_fails_the_check(tmp_path: Path) -> None:
    save(tmp_path / "benign/a.png")
    (tmp_path / "malignant").mkdir()
    (tmp_path / "malignant/zero.png").write_bytes(b"")
    result = run_cli(
        tmp_path, "dataset=folder", f"dataset.root={tmp_path}", "data.on_bad_image=skip"
    )
    assert result.returncode == 1
    assert "training would stop: no images left in class 'malignant'" in result.stdout


def test_console_script_checks_the_config_schema_as_training_does(tmp_path: Path) -> None:
    """A key added with `+` that nothing reads is named, not silently ignored."""
    result = run_cli(tmp_path, "dataset=folder", f"dataset.root={tmp_path}", "+dataset.rooot=x")
    assert result.returncode == 1
    assert "unknown key dataset.rooot; did you mean dataset.root?" in result.stderr
    assert "Traceback" not in result.stderr
