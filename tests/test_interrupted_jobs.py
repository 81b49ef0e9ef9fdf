"""The synthetic generator stopped midway, and two jobs of one cell started at once.

Real processes and real signals: `fus2net-data` generating a dataset is stopped with SIGTERM,
SIGINT or SIGKILL while its worker processes render, and must leave no partial folder (or, after
SIGKILL, one that the next run removes) and no orphaned workers. Two `fus2net-train` of the same
config started together must train each fold once between them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fus2net.synthetic import generator as synthetic
from fus2net.synthetic.generator import MANIFEST, generate_dataset
from jobs import sqlite_client, start_train, tiny, train_env


def test_a_failing_generator_removes_its_partial_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = synthetic._render_and_write, []

    def render_then_fail(job: tuple) -> None:
        calls.append(job)
        if len(calls) == 5:
            raise RuntimeError("renderer crashed")
        real(job)

    monkeypatch.setattr(synthetic, "_render_and_write", render_then_fail)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        generate_dataset(tmp_path / "syn", n_images=12, image_size=96, progress=False)
    assert list(tmp_path.iterdir()) == [], "neither the dataset nor a partial folder"
    monkeypatch.setattr(synthetic, "_render_and_write", real)
    root = generate_dataset(tmp_path / "syn", n_images=12, image_size=96, progress=False)
    assert (root / MANIFEST).is_file() and len(list(root.rglob("*.png"))) == 24


def _generate(root: Path, n_images: int) -> subprocess.Popen[str]:
    """`fus2net-data` on a synthetic dataset under `root` (generated first, with 2+ workers)."""
    args = [f"dataset.root={root}", f"dataset.n_images={n_images}", "dataset.image_size=256"]
    return subprocess.Popen(
        [sys.executable, "-m", "fus2net.cli.data", *args],
        cwd=root.parent,
        env=train_env(root.parent),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # SIGINT as a terminal delivers it, whatever this test inherited: a shell's background
        # job (`cmd &` without job control) ignores SIGINT, and so would the generator.
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (the generator's pool workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _rendering(proc: subprocess.Popen[str], root: Path) -> tuple[Path, list[int]]:
    """Wait until the workers have written some images; return the partial folder, workers."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        partial = next(root.parent.glob(f".{root.name}.partial-*"), None)
        if partial is not None and len(list(partial.rglob("*.png"))) >= 8:
            workers = _children(proc.pid)
            if len(workers) >= 2:
                return partial, workers
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the generator wrote no images within 2 minutes")


def _gone(pids: list[int], within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]:
            return True
        time.sleep(0.1)
    return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


@pytest.mark.skipif(os.cpu_count() == 1, reason="one CPU: the generator uses no worker pool")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_generator_removes_its_partial_folder_and_its_workers(
    tmp_path: Path, sig: signal.Signals
) -> None:
    root = tmp_path / "syn"
    proc = _generate(root, 2000)
    partial, workers = _rendering(proc, root)
    proc.send_signal(sig)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == -sig, out  # it still dies of the signal, as before
    assert not partial.exists() and not root.exists(), "nothing half-written is left"
    assert _gone(workers), f"workers {workers} outlived the generator"


@pytest.mark.skipif(os.cpu_count() == 1, reason="one CPU: the generator uses no worker pool")
def test_sigkill_of_the_generator_ends_its_workers_and_the_next_run_cleans_up(
    tmp_path: Path,
) -> None:
    root = tmp_path / "syn"
    proc = _generate(root, 2000)
    partial, workers = _rendering(proc, root)
    proc.kill()
    proc.wait(timeout=30)
    assert _gone(workers), f"workers {workers} kept running after their parent's SIGKILL"
    assert partial.exists() and not root.exists(), "nothing could clean up; nothing published"
    again = _generate(root, 12)
    out = again.communicate(timeout=300)[0]
    assert again.returncode == 0, out
    assert f"removing {partial}: left by process {proc.pid}" in out
    assert not partial.exists() and len(list(root.rglob("*.png"))) == 24


@pytest.mark.slow
def test_two_jobs_of_one_cell_started_at_once_train_each_fold_once(tmp_path: Path) -> None:
    # On a fresh store too: the store's lock lets one job create it (tracking/store_lock.py).
    args = tiny("data.image_size=64", "evaluation.enabled=false")
    logs = [(tmp_path / f"job{i}.log").open("w") for i in range(2)]
    jobs = [start_train(args, tmp_path, stdout=log) for log in logs]
    codes = [job.wait(timeout=900) for job in jobs]
    out = "\n".join((tmp_path / f"job{i}.log").read_text() for i in range(2))
    assert codes == [0, 0], out
    client = sqlite_client(tmp_path)
    experiment = client.get_experiment_by_name("fus2net").experiment_id
    found = client.search_runs([experiment], max_results=100)
    cells = [r for r in found if r.data.tags["fus2net.role"] == "cell"]
    folds = sorted(
        r.data.tags["fus2net.fold"] for r in found if r.data.tags["fus2net.role"] == "fold"
    )
    assert folds == ["0", "1"], f"each fold trained once, not {folds}:\n{out}"
    assert [c.info.status for c in cells] == ["FINISHED"], out
    assert all(r.info.status == "FINISHED" for r in found)
    # Each job left one fold to the other (locked, or found finished), or found all done.
    skipped = out.count("is locked); left to it") + out.count("not trained again")
    assert skipped + 2 * out.count(": nothing to train") >= 2, out
