"""Jobs started in the same second never share a Hydra output folder."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from fus2net.cli.output_dirs import RUN_DIR, SWEEP_DIR, claim, with_own_output_dir
from jobs import REPO, tiny, train_env

NOW = dt.datetime(2026, 12, 2, 9, 30, 5)


def test_the_patterns_are_train_yaml_s() -> None:
    hydra = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "train.yaml").hydra)
    as_now = {"{date}": "${now:%Y-%m-%d}", "{time}": "${now:%H-%M-%S}"}
    for pattern, written in ((RUN_DIR, hydra["run"]["dir"]), (SWEEP_DIR, hydra["sweep"]["dir"])):
        for key, value in as_now.items():
            pattern = pattern.replace(key, value)
        assert pattern == written


def test_the_next_free_folder_is_claimed(tmp_path: Path) -> None:
    folders = [claim(RUN_DIR, NOW, tmp_path) for _ in range(3)]
    assert [str(f) for f in folders] == [
        "outputs/2026-12-02/09-30-05",
        "outputs/2026-12-02/09-30-05_2",
        "outputs/2026-12-02/09-30-05_3",
    ]
    assert all((tmp_path / f).is_dir() for f in folders)


def test_overrides_and_printing_flags_are_left_alone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert with_own_output_dir(["hydra.run.dir=mine", "seed=1"], NOW) == [
        "hydra.run.dir=mine",
        "seed=1",
    ]
    assert with_own_output_dir(["--cfg", "job"], NOW) == ["--cfg", "job"]
    assert with_own_output_dir(["-m", "seed=1,2"], NOW)[-1] == (
        "hydra.sweep.dir=outputs/multirun/2026-12-02/09-30-05"
    )
    assert with_own_output_dir(["-cd", "conf"], NOW)[-1].startswith("hydra.run.dir=")
    assert not (tmp_path / "outputs" / "2026-12-02" / "09-30-05_2").exists()


def test_jobs_started_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    """Three real fus2net-train jobs released at one instant: three folders, each with its
    own .hydra/config.yaml naming its own seed, and every job finishing."""
    start = time.time() + 10
    start = int(start) + 1 - 0.05  # just before a full second: all three start in that second
    launch = (
        "import sys, time, runpy; s = float(sys.argv.pop(1));\n"
        "while time.time() < s: time.sleep(0.001)\n"
        "runpy.run_module('fus2net.cli.train', run_name='__main__')"
    )
    env = train_env(tmp_path)
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", launch, str(start), *tiny(f"seed={seed}", "cv.fold=0")],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in (1, 2, 3)
    ]
    outputs = [job.communicate(timeout=900)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0], [out[-1500:] for out in outputs]
    configs = sorted((tmp_path / "outputs").glob("*/*/.hydra/config.yaml"))
    assert len(configs) == 3, configs
    assert sorted(OmegaConf.load(c).seed for c in configs) == [1, 2, 3]
    assert len({c.parent.parent.name.split("_")[0] for c in configs}) <= 2  # mostly one second
