"""A job's Hydra output folder that no other job shares.

Hydra names it by the second the job started (`outputs/<date>/<HH-MM-SS>`, sweeps under
`outputs/multirun/`), so two jobs started in the same second (a shell loop starting folds as
separate jobs, two users) would mix their configs, checkpoints and logs in one folder. Before
Hydra starts, `fus2net-train` claims the folder itself with an atomic `mkdir` and, when another
job has it, takes the next free `<HH-MM-SS>_2`, `_3`, ...; it passes the folder to Hydra as an
override, so launcher workers (joblib, submitit) get the name as a plain string.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

# conf/train.yaml's hydra.run.dir and hydra.sweep.dir, as `now` formats (a test keeps them equal)
RUN_DIR = "outputs/{date}/{time}"
SWEEP_DIR = "outputs/multirun/{date}/{time}"
_DATE, _TIME = "%Y-%m-%d", "%H-%M-%S"
_MULTIRUN_FLAGS = ("-m", "--multirun")
_SET_ELSEWHERE = ("hydra.run.dir=", "hydra.sweep.dir=", "hydra.mode=")
# Hydra's flags that print and exit (no job, no folder)
_PRINT_ONLY = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion"}


def is_multirun(argv: Sequence[str]) -> bool:
    return any(arg in _MULTIRUN_FLAGS for arg in argv)


def claim(pattern: str, now: dt.datetime, root: Path = Path()) -> Path:
    """Create and return the first free folder of `pattern` at `now`: `<time>`, `<time>_2`..."""
    base = pattern.format(date=now.strftime(_DATE), time=now.strftime(_TIME))
    for n in range(1, 10_000):
        folder = Path(base if n == 1 else f"{base}_{n}")
        try:
            (root / folder).mkdir(parents=True)
        except FileExistsError:
            continue
        return folder
    raise RuntimeError(f"no free output folder for {base} (10,000 taken)")


def with_own_output_dir(argv: Sequence[str], now: dt.datetime | None = None) -> list[str]:
    """`argv` plus the override naming a folder this job alone has; unchanged when the command
    sets the folder (or the mode) itself or only prints the config or help."""
    args = list(argv)
    if any(arg.split("=", 1)[0] in _PRINT_ONLY for arg in args):
        return args
    if any(arg.lstrip("+~").startswith(_SET_ELSEWHERE) for arg in args):
        return args
    now = now or dt.datetime.now()
    if is_multirun(args):
        return [*args, f"hydra.sweep.dir={claim(SWEEP_DIR, now)}"]
    return [*args, f"hydra.run.dir={claim(RUN_DIR, now)}"]
