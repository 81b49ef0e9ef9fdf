"""A full disk, a torn cache and a foreign last.ckpt: each a clear outcome, never a stuck job.

The full disks are real: a small tmpfs mounted where the job writes (as root, as CI runs; the
tests are skipped where mounting is not allowed). A full disk ends the job with exit 2 naming
the file and the space it needed, every run FAILED, no torn file at a final path, and the same
command resumes once there is room. A torn image cache is rebuilt and a last.ckpt that is not
this model's Lightning checkpoint is reported and the fold trained from scratch.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from fus2net.data.cache import ImageCache
from fus2net.data.records import Record
from fus2net.io.files import DiskFull, as_disk_full
from fus2net.training.checkpoints import resume_problem
from jobs import run_train, sqlite_client, tiny

FINGERPRINT = "0" * 64  # of records never read: their pixels are given
TINY = tiny("data.image_size=64", "evaluation.enabled=false", "hydra.run.dir=outputs/run")


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `folder` for the block (skip the test where not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    done = subprocess.run(mount, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({done.stderr.strip()}): these tests run as root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def runs(root: Path) -> dict[str, list]:
    """The experiment's runs by role (cell, fold)."""
    client = sqlite_client(root)
    experiment = client.get_experiment_by_name("fus2net").experiment_id
    found = client.search_runs([experiment], max_results=100)
    by_role: dict[str, list] = {"cell": [], "fold": []}
    for run in found:
        by_role[run.data.tags["fus2net.role"]].append(run)
    return by_role


def assert_failed_on_full_disk(root: Path, proc: subprocess.CompletedProcess, file: str) -> None:
    """Exit 2 naming `file` and the MB it needed, no traceback, every run FAILED with it."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    assert f"disk full: writing {file} needs " in out, out
    assert " MB, its file system has " in out
    found = runs(root)
    assert [r.info.status for r in found["cell"]] == ["FAILED"]
    assert [r.info.status for r in found["fold"]] == ["FAILED"]
    for run in found["cell"] + found["fold"]:
        assert run.data.tags["fus2net.error"].startswith(f"DiskFull: disk full: writing {file}")


@pytest.mark.slow
def test_full_disk_at_a_checkpoint_fails_exit_2_then_a_foreign_last_ckpt_is_trained_over(
    tmp_path: Path,
) -> None:
    """Checkpoints (~28 MB with Adam's state) on a 1 MB file system: the first save fails."""
    cells = tmp_path / "outputs" / "cells"
    with tmpfs(cells, "1m"):
        proc = run_train(TINY, cwd=tmp_path, check=False)
        last = next(cells.glob("fus2net/*/fold_0/checkpoints"), None)
        assert last is not None
        assert_failed_on_full_disk(tmp_path, proc, str(last / "last.ckpt"))
        assert sorted(p.name for p in last.iterdir()) == [], "no torn last.ckpt, no temp file"
    # Room again, but someone left a plain state dict as the fold's last.ckpt (before: the fold
    # failed on it at every re-run). It is reported, and the fold trains from scratch in its
    # reopened run; the cell finishes.
    last.mkdir(parents=True)
    torch.save({"fc.weight": torch.zeros(2, 3)}, last / "last.ckpt")
    again = run_train(TINY, cwd=tmp_path)
    out = again.stdout + again.stderr
    assert f"cannot resume from {last / 'last.ckpt'}: not a Lightning checkpoint" in out, out
    assert "training this fold from scratch" in out
    found = runs(tmp_path)
    assert [r.info.status for r in found["cell"]] == ["FINISHED"]
    assert sorted(r.info.status for r in found["fold"]) == ["FINISHED", "FINISHED"]
    first = [r for r in found["fold"] if r.data.tags["fus2net.fold"] == "0"]
    assert [r.data.tags.get("fus2net.attempts") for r in first] == ["2"], "reopened, not new"
    assert "fus2net.resumed_from_epoch" not in first[0].data.tags, "from scratch"


@pytest.mark.slow
def test_full_disk_at_model_pt_fails_exit_2_and_leaves_no_torn_weights(tmp_path: Path) -> None:
    """The job's output folder on 512 KB: Hydra's files fit, a 9 MB model.pt does not."""
    with tmpfs(tmp_path / "outputs" / "run", "512k") as out:
        proc = run_train(TINY, cwd=tmp_path, check=False)
        assert_failed_on_full_disk(tmp_path, proc, str(out / "fold_0" / "model.pt"))
        assert not [p.name for p in (out / "fold_0").iterdir() if "model" in p.name]


def test_full_disk_while_saving_the_image_cache_names_it_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    records = [Record(tmp_path / f"{i}.png", i % 2) for i in range(100)]
    pixels = np.zeros((100, 64, 64, 3), dtype=np.uint8)  # 1.2 MB
    with tmpfs(tmp_path / "cache", "256k") as cache:
        with pytest.raises(DiskFull) as error:
            ImageCache.build(records, 64, 3, "disk", cache, False, FINGERPRINT, pixels)
        assert error.value.path.parent == cache / "images"
        assert error.value.need_bytes is not None and error.value.need_bytes >= pixels.nbytes
        assert "needs 1.2 MB" in str(error.value)
        assert error.value.free_bytes is not None and error.value.free_bytes <= 256 * 1024
        assert list((cache / "images").iterdir()) == [], "no torn .npy, no temp file"


def test_a_full_tracking_store_is_reported_as_a_full_disk_naming_its_file(
    tmp_path: Path,
) -> None:
    """SQLite says 'database or disk is full' (no errno, no file): the store's file is named."""
    from fus2net.tracking.mlflow_tracker import MlflowTracker

    with tmpfs(tmp_path / "store", "2m") as store:
        db = store / "mlflow.db"
        tracker = MlflowTracker(f"sqlite:///{db}", "full")
        run = tracker.start_run("r", {"a": "b"})
        _fill(store / "filler")
        with pytest.raises(Exception) as error:
            for i in range(100):
                tracker.set_tags(run, {f"k{i}": "v" * 5000})
        full = as_disk_full(error.value, store=db)
        assert full is not None, error.value
        assert full.path == db and "disk full: writing" in str(full)
    assert as_disk_full(ValueError("no space in this sentence")) is None


def _fill(path: Path) -> None:
    """Write zeros to `path` until its file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "damage",
    ["truncated", "garbage", "other shape", "trailing bytes"],
)
def test_a_torn_image_cache_is_rebuilt_with_a_log_line(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    records = [Record(tmp_path / f"{i}.png", i % 2) for i in range(8)]
    pixels = np.arange(8 * 16 * 16 * 3, dtype=np.uint8).reshape(8, 16, 16, 3)
    built = ImageCache.build(records, 16, 3, "disk", tmp_path, False, FINGERPRINT, pixels)
    assert built.path is not None
    whole = built.path.read_bytes()
    if damage == "truncated":
        built.path.write_bytes(whole[: len(whole) // 2])
    elif damage == "garbage":
        built.path.write_bytes(b"not a numpy file at all")
    elif damage == "other shape":
        np.save(built.path, pixels[:4])
    else:
        built.path.write_bytes(whole + b"\0" * 100)
    with caplog.at_level(logging.WARNING, logger="fus2net.data.cache"):
        again = ImageCache.build(records, 16, 3, "disk", tmp_path, False, FINGERPRINT, pixels)
    assert f"image cache {built.path} is unusable" in caplog.text
    assert "rebuilding it" in caplog.text
    np.testing.assert_array_equal(np.asarray(again.images), pixels)
    assert built.path.read_bytes() == whole, "rebuilt in place, byte for byte"
    assert [p.name for p in built.path.parent.iterdir()] == [built.path.name], "no temp left"


class Tiny(torch.nn.Module):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(width, 2)


def _lightning(state: dict) -> dict:
    """A checkpoint with every key a Lightning resume reads, and the weights `state`."""
    keys = ("optimizer_states", "lr_schedulers", "loops", "global_step")
    checkpoint = {"state_dict": state, "epoch": 1, "pytorch-lightning_version": "2"}
    return checkpoint | {key: [] for key in keys}


@pytest.mark.parametrize(
    ("saved", "why"),
    [
        # torch.save(model.state_dict()), as a user would save weights by hand
        (Tiny().state_dict(), "not a Lightning checkpoint of a fit: no 'state_dict'"),
        ({"epoch": 3, "weights": {}}, "no 'state_dict'"),
        ([1, 2, 3], "holds a list"),
        (_lightning({"conv.weight": torch.zeros(1)}), "weights of another model"),
        (_lightning(Tiny(width=5).state_dict()), "weights of another shape"),
    ],
)
def test_a_last_ckpt_that_is_not_this_models_checkpoint_says_why(
    tmp_path: Path, saved: object, why: str
) -> None:
    checkpoint = tmp_path / "last.ckpt"
    torch.save(saved, checkpoint)
    problem = resume_problem(checkpoint, Tiny())
    assert problem is not None and why in problem
    torch.save(_lightning(Tiny().state_dict()), checkpoint)
    assert resume_problem(checkpoint, Tiny()) is None
