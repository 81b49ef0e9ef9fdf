"""The wheel stands alone: it carries the Hydra configs, and fus2net-train runs from it outside
the checkout (no editable install, no conf/ beside the working directory)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jobs import REPO, TINY, sqlite_client, store_uri, train_env

pytestmark = pytest.mark.slow

TRAIN = "from fus2net.cli.train import main; main()"


def _pip(*args: str, timeout: float = 300) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from this checkout (with the venv's hatchling when it has
    one, else pip fetches the build backend into an isolated environment)."""
    out = tmp_path_factory.mktemp("wheel")
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    _pip("wheel", "--no-deps", *isolation, "-w", str(out), str(REPO))
    (built,) = out.glob("fus2net-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed, without its dependencies (the venv has them), in a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    _pip("install", "--no-deps", "--target", str(target), str(wheel))
    return target


def from_wheel(
    site: Path, cwd: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -c ARGS...` in `cwd`, the job rooted there, importing fus2net from `site` only."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=train_env(cwd, PYTHONPATH=str(site)),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_wheel_holds_every_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = sorted(p.relative_to(REPO / "conf").as_posix() for p in REPO.glob("conf/**/*.yaml"))
    assert "train.yaml" in configs
    missing = [c for c in configs if f"fus2net/conf/{c}" not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert {"fus2net/py.typed", "fus2net/cli/train.py"} <= names


def test_installed_wheel_composes_outside_the_checkout(site: Path, tmp_path: Path) -> None:
    where = from_wheel(
        site,
        tmp_path,
        "-c",
        "import fus2net; from fus2net.cli import config_dir; print(fus2net.__file__); "
        "print(config_dir())",
    )
    assert where.returncode == 0, where.stderr
    module, conf = (Path(line).resolve() for line in where.stdout.split())
    assert module.is_relative_to(site.resolve()), module
    assert conf == site.resolve() / "fus2net" / "conf"

    shown = from_wheel(site, tmp_path, "-c", TRAIN, "--cfg", "job")
    assert shown.returncode == 0, shown.stderr
    assert "optimizer:" in shown.stdout and "model:" in shown.stdout
    assert list(tmp_path.iterdir()) == []  # --cfg job runs nothing


def test_installed_wheel_trains_a_tiny_job(site: Path, tmp_path: Path) -> None:
    job = from_wheel(site, tmp_path, "-c", TRAIN, *TINY, timeout=600)
    assert job.returncode == 0, f"{job.stdout}\n{job.stderr}"
    assert (tmp_path / "mlruns" / "mlflow.db").is_file(), store_uri(tmp_path)
    client = sqlite_client(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("fus2net").experiment_id])
    cells = [r for r in runs if r.data.tags.get("fus2net.role") == "cell"]
    assert [c.info.status for c in cells] == ["FINISHED"]
