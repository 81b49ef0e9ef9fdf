"""Faults before and during training: bad images, a diverged fold, no tracking server, no disk.

Each must end with a clear message and a non-zero exit, or, for a diverged fold, a FAILED cell
with the reason while the rest of the sweep goes on; and a re-run must not redo finished cells.
"""

from __future__ import annotations

import socket
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fus2net.cell.job_data import prepare_data
from fus2net.config import preflight
from fus2net.config.preflight import ConfigError, PreflightError
from fus2net.config.validate import validate_config
from fus2net.data.records import DataError
from jobs import compose_train, run_train, sqlite_client, store_uri, tiny, train_env

TINY = tiny(
    "data.image_size=64",
    "evaluation.enabled=false",
    drop=("dataset.n_images", "dataset.image_size"),  # also run on dataset=folder
)
BAD_FILES = {"benign/empty.png": "zero-byte", "malignant/broken.png": "not an image"}


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class-per-folder dataset of 2 x 16 noise images plus a zero-byte and a broken file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("benign", "malignant"):
        (root / name).mkdir()
        for i in range(16):
            pixels = rng.integers(0, 255, (96, 96), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{i}.png")
    (root / "benign" / "empty.png").write_bytes(b"")
    (root / "malignant" / "broken.png").write_bytes(b"this is not a PNG")
    return root


def test_bad_images_are_all_listed_in_one_error(bad_folder: Path, tmp_path: Path) -> None:
    cfg = compose_train("dataset=folder", f"dataset.root={bad_folder}", f"paths.root={tmp_path}")
    with pytest.raises(DataError) as error:
        prepare_data(cfg)
    message = str(error.value)
    for name, reason in BAD_FILES.items():
        assert name.split("/")[1] in message and reason in message
    assert "data.on_bad_image=skip" in message
    with pytest.raises(ConfigError, match=r"data\.on_bad_image=maybe"):
        validate_config(compose_train("data.on_bad_image=maybe"))


def test_bad_images_can_be_skipped_and_are_counted(bad_folder: Path, tmp_path: Path) -> None:
    cfg = compose_train(
        "dataset=folder",
        f"dataset.root={bad_folder}",
        f"paths.root={tmp_path}",
        "data.on_bad_image=skip",
        "data.image_size=32",
        "data.dedupe=false",
    )
    data = prepare_data(cfg)
    assert len(data.records) == 32
    assert not {str(bad_folder / name) for name in BAD_FILES} & {str(r.image) for r in data.records}
    assert sorted(Path(p.path).name for p in data.skipped) == ["broken.png", "empty.png"]
    assert data.description["skipped_bad_files"] == 2 and data.description["n_images"] == 32


def test_eval_datasets_that_cannot_be_scored_stop_the_job_before_training(
    bad_folder: Path, tmp_path: Path
) -> None:
    cfg = compose_train(
        "dataset=folder",
        f"dataset.root={bad_folder}",
        f"paths.root={tmp_path}",
        "data.on_bad_image=skip",
        "+dataset@eval_datasets.gone=folder",
        f"eval_datasets.gone.root={tmp_path / 'nowhere'}",
        "+dataset@eval_datasets.swapped=folder",
        f"eval_datasets.swapped.root={bad_folder}",
        "eval_datasets.swapped.classes=[malignant,benign]",
    )
    with pytest.raises(DataError) as error:
        prepare_data(cfg)
    message = str(error.value)
    assert "2 problem(s) in dataset 'eval_datasets'" in message
    assert "eval_datasets.gone:" in message and "nowhere" in message
    assert "eval_datasets.swapped: classes ['malignant', 'benign'] differ" in message
    assert "~eval_datasets.NAME" in message
    assert not (tmp_path / "cache").exists() and not (tmp_path / "mlruns").exists()


def test_no_free_disk_for_the_cache_stops_before_decoding(
    bad_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _: usage(10**9, 10**9, 10**6))
    cfg = compose_train(
        "dataset=folder",
        f"dataset.root={bad_folder}",
        f"paths.root={tmp_path}",
        "data.on_bad_image=skip",
        "data.cache=disk",
    )
    with pytest.raises(PreflightError, match=r"data.cache=disk.*only 1 MB free"):
        prepare_data(cfg)
    assert not (tmp_path / ".cache" / "fus2net" / "images").exists(), "nothing half-written"


def test_unreachable_tracking_server_fails_fast_and_writes_nothing(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    proc = run_train(
        ["tracking=server", *TINY],
        cwd=tmp_path,
        env=train_env(tmp_path, MLFLOW_TRACKING_URI=f"http://fus2net:s3cret@127.0.0.1:{port}"),
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert time.monotonic() - started < 120
    assert f"cannot reach the tracking store at http://127.0.0.1:{port}" in out
    assert "s3cret" not in out and "Traceback" not in out
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_diverged_fold_fails_its_cell_while_the_sweep_goes_on(
    bad_folder: Path, tmp_path: Path
) -> None:
    """l2=1e39 makes the first loss infinite. Bad images are skipped (and logged) meanwhile,
    and the same command run again trains nothing that had finished."""
    args = [
        "-m",
        "regularization.l2=0.05,1e39",
        "dataset=folder",
        f"dataset.root={bad_folder}",
        "data.on_bad_image=skip",
        *TINY,
    ]
    first = run_train(args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    client = sqlite_client(tmp_path)
    experiment = client.get_experiment_by_name("fus2net").experiment_id

    def cells_and_folds() -> tuple[dict, list]:
        found = client.search_runs([experiment], max_results=100)
        cells = {
            float(r.data.tags["override.regularization.l2"]): r
            for r in found
            if r.data.tags["fus2net.role"] == "cell"
        }
        return cells, [r for r in found if r.data.tags["fus2net.role"] == "fold"]

    cells, folds = cells_and_folds()
    good, bad = cells[0.05], cells[1e39]
    assert good.info.status == "FINISHED" and bad.info.status == "FAILED"
    assert "loss is inf" in bad.data.tags["fus2net.error"]
    bad_folds = [f for f in folds if f.data.tags["mlflow.parentRunId"] == bad.info.run_id]
    assert {f.info.status for f in bad_folds} == {"FAILED"} and len(bad_folds) == 2
    assert all("FloatingPointError" in f.data.tags["fus2net.error"] for f in bad_folds)
    assert good.data.params["dataset.n_images"] == "32"
    assert "skipped_images.csv" in {a.path for a in client.list_artifacts(good.info.run_id)}

    from fus2net.reporting.compare import runs as compare
    from fus2net.tracking.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker(store_uri(tmp_path), "fus2net")
    sweep = compare.read_sweep(tracker)
    assert [c.run_id for c in sweep.cells] == [good.info.run_id]
    assert [(s.run_id, s.status) for s in sweep.skipped] == [(bad.info.run_id, "FAILED")]

    second = run_train(args, cwd=tmp_path)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert f"is finished in run {good.info.run_id}: nothing to train" in out
    cells, refolds = cells_and_folds()
    assert len(refolds) == len(folds), "no run was added: finished folds skipped, failed reopened"
    assert cells[0.05].info.run_id == good.info.run_id
    assert cells[1e39].info.status == "FAILED"
    assert {f.data.tags.get("fus2net.attempts") for f in refolds if f.info.status == "FAILED"} == {
        "2"
    }


def _manifest_args(root: Path, csv_text: str, *overrides: str) -> list[str]:
    """A manifest job over two 64 px images and list.csv (the CSV as given)."""
    for name in ("a", "b"):
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.new("L", (64, 64), 90).save(root / "img" / f"{name}.png")
    (root / "list.csv").write_text(csv_text)
    csv = f"dataset.csv={root / 'list.csv'}"
    return ["dataset=manifest", csv, "dataset.image_column=path", *overrides, *TINY]


def test_class_without_images_stops_training_exit_2(tmp_path: Path) -> None:
    """label_map drops every malignant row: exit 2 naming the class, no run (today: a
    FINISHED cell with accuracy 1.0 and AUC nan)."""
    args = _manifest_args(
        tmp_path / "data",
        "path,label\nimg/a.png,B\nimg/b.png,N\n",
        "dataset.label_map={B:benign,M:malignant,N:null}",
    )
    proc = run_train(args, cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "class 'malignant' (label 1): no images in list.csv" in out
    assert "Traceback" not in out and not (tmp_path / "mlruns").exists()


def test_header_only_csv_stops_training_exit_2(tmp_path: Path) -> None:
    proc = run_train(_manifest_args(tmp_path / "data", "path,label\n"), cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "the CSV has a header but no rows" in out and "Traceback" not in out


def test_skip_that_empties_a_class_stops_the_job(bad_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name in ("benign", "malignant"):
        (root / name).mkdir(parents=True)
    for i in range(4):
        (root / "benign" / f"b{i}.png").write_bytes(
            (bad_folder / f"benign/benign_{i}.png").read_bytes()
        )
    (root / "malignant" / "empty.png").write_bytes(b"")
    cfg = compose_train(
        "dataset=folder", f"dataset.root={root}", f"paths.root={tmp_path}", "data.on_bad_image=skip"
    )
    with pytest.raises(DataError) as error:
        prepare_data(cfg)
    assert [p.path for p in error.value.problems] == ["class 'malignant' (label 1)"]
    assert "left after data.on_bad_image=skip" in str(error.value)


def test_invalid_dataset_option_is_a_config_error(tmp_path: Path) -> None:
    args = _manifest_args(tmp_path / "data", "path,label\n", "dataset.delimiter=';;'")
    cfg = compose_train(*args[: -len(TINY)], f"paths.root={tmp_path}")
    with pytest.raises(ConfigError, match=r"dataset\.delimiter=';;' must be one character"):
        prepare_data(cfg)


def test_a_run_killed_by_an_exception_without_message_says_what_happened() -> None:
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from fus2net.experiment.cells import error_text

    assert error_text(SIGTERMException()) == (
        "SIGTERMException: the process received SIGTERM (scancel, a scheduler's time limit, kill)"
    )
    assert error_text(KeyboardInterrupt()).startswith("KeyboardInterrupt: interrupted")
    assert error_text(RuntimeError()) == "RuntimeError: no message"
    assert error_text(ValueError("bad key")) == "ValueError: bad key"
