"""Tiny training jobs for the end-to-end tests: settings, launchers and the store they write.

Every end-to-end test runs the real `fus2net.cli.train` in a child process rooted at its own
folder (`FUS2NET_HOME`), so the tests share one way to start it and one way to read the MLflow
SQLite store it leaves in `<root>/mlruns/mlflow.db`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
BUSI = REPO.parent / "shared" / "data" / "busi" / "Dataset_BUSI_with_GT"

# Tiny but real: 72 synthetic images at 80 px, 2 folds, 1 epoch, on the CPU trainer, eager
# (torch.compile's minute would dwarf a tiny job; tests/test_compiled.py trains compiled).
TINY = (
    "dataset.n_images=72",
    "dataset.image_size=128",
    "data.image_size=80",
    "data.batch_size=8",
    "cv.folds=2",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "data.test.fraction=0.25",
    "trainer.compile=false",
)


def _key(override: str) -> str:
    return override.split("=", 1)[0]


def tiny(*overrides: str, drop: Iterable[str] = ()) -> list[str]:
    """TINY with each `key=value` of `overrides` replacing that key's value in place (or added
    at the end), and the keys in `drop` left out: a test states only how its job differs."""
    drop = set(drop)
    unknown = drop - {_key(item) for item in TINY}
    if unknown:
        raise KeyError(f"not in TINY, nothing to drop: {sorted(unknown)}")
    changes = {_key(item): item for item in overrides}
    kept = [changes.pop(_key(item), item) for item in TINY if _key(item) not in drop]
    return [*kept, *changes.values()]


def train_env(root: Path, **extra: str) -> dict[str, str]:
    """This environment with the job rooted at `root` and this checkout's sources importable;
    an inherited MLFLOW_TRACKING_URI is dropped (pass it in `extra`): the job uses its own store."""
    inherited = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**inherited, "FUS2NET_HOME": str(root), "PYTHONPATH": str(REPO / "src"), **extra}


def run_module(
    module: str,
    args: Iterable[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m module *args` in `cwd` (environment `train_env(cwd)` unless given); with
    `check`, a non-zero exit fails the test showing the process's output."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=train_env(cwd) if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_train(args: Iterable[str], cwd: Path, **options: Any) -> subprocess.CompletedProcess[str]:
    """Run fus2net-train to the end; `options` (env, check, timeout) as for `run_module`."""
    return run_module("fus2net.cli.train", args, cwd, **options)


def start_train(
    args: Iterable[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    stdout: int | IO[str] = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """Start fus2net-train without waiting, stderr merged into `stdout`, for tests that signal
    the job or run several at once."""
    return subprocess.Popen(
        [sys.executable, "-m", "fus2net.cli.train", *args],
        cwd=cwd,
        env=train_env(cwd) if env is None else env,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        text=True,
    )


def store_uri(root: Path) -> str:
    """The SQLite tracking store a job rooted at `root` writes."""
    return f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"


def sqlite_client(root: Path) -> MlflowClient:
    """An MLflow client on the store of the job rooted at `root` (MLflow imported only here:
    collecting the tests stays fast)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store_uri(root))


def compose_train(*overrides: str, hydra_config: bool = False):
    """The `train` config with `overrides`, composed in-process as `fus2net-train` would (with
    `hydra_config`, Hydra's own node too, e.g. to inspect launchers)."""
    from hydra import compose, initialize_config_dir

    from fus2net.cli import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(
            config_name="train", overrides=list(overrides), return_hydra_config=hydra_config
        )


def untrained_package(
    root: Path, image_size: int, *, nan_bias: bool = False, drop_rate: float = 0.0, **spec: Any
) -> Path:
    """A job-output-like folder in `root`: two untrained Fus2Net fold models (seeds 0 and 1) and
    their fus2net_model.json with `spec`'s extra fields; `nan_bias` puts NaN in the classifier's
    bias, so that every image gets a NaN probability."""
    import math

    import torch

    from fus2net.inference.spec import Member, ModelSpec
    from fus2net.models import create_model

    members = []
    for fold in (0, 1):
        torch.manual_seed(fold)
        state = create_model("fus2net", in_chans=3, num_classes=2, drop_rate=drop_rate).state_dict()
        if nan_bias:
            state["head.fc.bias"] = torch.full_like(state["head.fc.bias"], math.nan)
        (root / f"fold_{fold}").mkdir(parents=True)
        torch.save(state, root / f"fold_{fold}" / "model.pt")
        members.append(Member(f"fold_{fold}/model.pt", fold))
    if drop_rate:
        spec["drop_rate"] = drop_rate
    ModelSpec(
        model={"name": "fus2net", "pool": "auto"},
        in_chans=3,
        image_size=image_size,
        class_names=["benign", "malignant"],
        members=members,
        **spec,
    ).write(root)
    return root
