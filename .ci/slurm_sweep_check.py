"""A 2-job tiny sweep through `hydra/launcher=slurm` into the MLflow server, one job cancelled
mid-fold with `scancel`, the same command again, and a check that nothing was lost or redone.

Run by .ci/slurm-sweep.sh, which starts the services first (MLFLOW_TRACKING_URI: the PostgreSQL-
backed MLflow server of .ci/tracking-server.sh; SLURM_CONF and FUS2NET_SLURM_PARTITION: the
cluster of .ci/slurm-cluster.sh). Prints a short summary; exits 1 with the reason when a check
fails.

1. `fus2net-train -m hydra/launcher=slurm tracking=server optimizer=adam,sgd <tiny>` in the
   background (submitit's launcher blocks until its array job ends);
2. waits until a task is mid-fold: its fold 2/2 RUNNING in MLflow with a `last.ckpt` on disk
   (fold 1/2 finished before), finds the task's SLURM job by the run's owner pid
   (`scontrol pidinfo`) and cancels it (`scancel`), records every run's status once the sweep
   has returned;
3. runs the same command again and checks on the server: both cells FINISHED with both folds
   FINISHED; one run per fold (the interrupted one reopened, resumed from its checkpoint); every
   run that had finished before the rerun untouched (same end time, no new epochs).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from fus2net.tracking.schema import TRAIN_LOSS

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3  # per fold: enough that a task is still mid-fold a poll after its first checkpoint
SWEEP_TIMEOUT_S = 1200


def log(message: str) -> None:
    print(f"[slurm-sweep {dt.datetime.now():%H:%M:%S}] {message}", flush=True)


def fail(message: str) -> None:
    log(f"FAILED: {message}")
    sys.exit(1)


def sweep_command(experiment: str, partition: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fus2net.cli.train",
        "-m",
        "hydra/launcher=slurm",
        "tracking=server",
        f"tracking.experiment={experiment}",
        "dataset.n_images=72",
        "dataset.image_size=128",
        "data.image_size=80",
        "data.batch_size=8",
        "cv.folds=2",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.threads=1",
        "trainer.compile=false",  # a tiny job: compiling would take longer than training
        "trainer.enable_progress_bar=false",
        "data.test.fraction=0.25",
        "optimizer=adam,sgd",
        f"hydra.launcher.partition={partition}",
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=30",
    ]


def runs_of(client: MlflowClient, experiment_id: str) -> dict[str, object]:
    return {r.info.run_id: r for r in client.search_runs([experiment_id], max_results=1000)}


def role(run) -> str:
    return run.data.tags.get("fus2net.role", "")


def describe(run) -> str:
    tags = run.data.tags
    if role(run) == "fold":
        return f"{tags.get('override.optimizer', '?')} fold {int(tags['fus2net.fold']) + 1}/2"
    return f"{tags.get('override.optimizer', '?')} cell"


def epochs_logged(client: MlflowClient, run_id: str) -> int:
    return len(client.get_metric_history(run_id, TRAIN_LOSS))


def slurm_job_of(pid: str) -> str:
    """The SLURM array task (`<array job>_<task>`) that process `pid` of this node belongs to:
    `scontrol pidinfo` gives the task's own job id, which scancel refuses for an array task
    ("Invalid job id specified", and exit status 0); squeue names it."""
    out = subprocess.run(["scontrol", "pidinfo", pid], capture_output=True, text=True).stdout
    found = re.search(r"JobId=(\d+)", out)
    if not found:
        fail(f"scontrol pidinfo {pid}: no job ({out.strip()!r})")
    queue = subprocess.run(
        ["squeue", "--noheader", "--format", "%A %i"], capture_output=True, text=True, check=True
    ).stdout
    names = dict(line.split() for line in queue.splitlines() if line.strip())
    return names.get(found.group(1), found.group(1))


def cancel(job: str) -> None:
    """scancel `job` and wait until SLURM has it no longer running (scancel's exit status does
    not say whether it took)."""
    subprocess.run(["scancel", job], check=True)
    for _ in range(120):
        state = subprocess.run(
            ["squeue", "--noheader", "--jobs", job, "--format", "%T"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if state != "RUNNING":
            return
        time.sleep(0.5)
    fail(f"scancel {job}: still RUNNING a minute later")


def wait_mid_fold(client, experiment_id, root, experiment, sweep):
    """The first fold 2/2 run RUNNING with its fold's last.ckpt on disk."""
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while time.monotonic() < deadline:
        if sweep.poll() is not None:
            fail(f"the sweep ended (exit {sweep.returncode}) before any task was mid-fold")
        for run in runs_of(client, experiment_id).values():
            tags = run.data.tags
            if role(run) != "fold" or run.info.status != "RUNNING" or tags["fus2net.fold"] != "1":
                continue
            cell_key = client.get_run(tags["mlflow.parentRunId"]).data.tags["fus2net.cell_key"]
            ckpt = root / "outputs/cells" / experiment / cell_key / "fold_1/checkpoints/last.ckpt"
            if ckpt.exists():
                return run, ckpt
        time.sleep(0.5)
    fail("no task was mid-fold in time")


def main() -> None:
    uri = os.environ["MLFLOW_TRACKING_URI"]
    partition = os.environ.get("FUS2NET_SLURM_PARTITION", "ci")
    root = Path(tempfile.mkdtemp(prefix="fus2net-slurm-sweep."))
    experiment = f"slurm-sweep-{dt.datetime.now():%Y%m%d-%H%M%S}"
    env = {
        **os.environ,
        "FUS2NET_HOME": str(root),
        "PYTHONPATH": str(REPO / "src"),
        "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": uri,
    }
    command = sweep_command(experiment, partition)
    client = MlflowClient(tracking_uri=uri)
    log(f"root {root}, experiment {experiment}")
    log("command: " + " ".join(command[1:]).replace("-m fus2net.cli.train", "fus2net-train"))

    started = time.monotonic()
    with open(root / "sweep-1.log", "w") as out:
        sweep = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
        while (found := client.get_experiment_by_name(experiment)) is None:
            if sweep.poll() is not None:
                output = (root / "sweep-1.log").read_text()
                fail(f"the sweep ended (exit {sweep.returncode}):\n{output}")
            time.sleep(1)
        experiment_id = found.experiment_id
        run, ckpt = wait_mid_fold(client, experiment_id, root, experiment, sweep)
        job = slurm_job_of(run.data.tags["fus2net.pid"])
        cancelled = describe(run)
        epochs_at_cancel = epochs_logged(client, run.info.run_id)
        log(
            f"{cancelled} RUNNING (run {run.info.run_id[:8]}, {epochs_at_cancel}/{EPOCHS} epochs "
            f"logged, {ckpt.name} on disk): scancel {job}"
        )
        cancel(job)
        cancelled_at = time.monotonic()
        rc1 = sweep.wait(timeout=SWEEP_TIMEOUT_S)
    first_s = time.monotonic() - started
    log(
        f"first sweep returned {rc1} after {first_s:.0f} s "
        f"({time.monotonic() - cancelled_at:.0f} s after scancel)"
    )
    queued = subprocess.run(["squeue", "--noheader"], capture_output=True, text=True).stdout.strip()
    if queued:
        fail(f"jobs still queued after the sweep returned:\n{queued}")

    before = runs_of(client, experiment_id)
    log("before the rerun:")
    for r in sorted(before.values(), key=describe):
        log(f"  {describe(r):<16} {r.info.status:<9} {r.data.tags.get('fus2net.error', '')[:110]}")
    finished_before = {
        rid: (r.info.end_time, epochs_logged(client, rid) if role(r) == "fold" else None)
        for rid, r in before.items()
        if r.info.status == "FINISHED"
    }
    cancelled_status = before[run.info.run_id].info.status

    started = time.monotonic()
    with open(root / "sweep-2.log", "w") as out:
        rc2 = subprocess.run(
            command,
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=SWEEP_TIMEOUT_S,
        ).returncode
    second_s = time.monotonic() - started
    log(f"rerun returned {rc2} after {second_s:.0f} s")

    after = runs_of(client, experiment_id)
    problems = []
    if rc2 != 0:
        problems.append(f"the rerun exited {rc2} (log: {root / 'sweep-2.log'})")
    cells = [r for r in after.values() if role(r) == "cell"]
    folds = [r for r in after.values() if role(r) == "fold"]
    if sorted(c.data.tags.get("override.optimizer") for c in cells) != ["adam", "sgd"]:
        problems.append(f"cells: {[describe(c) for c in cells]}, expected one adam, one sgd")
    for c in cells:
        mine = [f for f in folds if f.data.tags.get("mlflow.parentRunId") == c.info.run_id]
        per_fold = sorted(f.data.tags["fus2net.fold"] for f in mine)
        if c.info.status != "FINISHED":
            problems.append(f"{describe(c)} {c.info.status}")
        if per_fold != ["0", "1"]:
            problems.append(f"{describe(c)}: fold runs {per_fold}, expected one per fold")
        problems += [f"{describe(f)} {f.info.status}" for f in mine if f.info.status != "FINISHED"]
    for rid, (end_time, epochs) in finished_before.items():
        r = after[rid]
        now = (r.info.end_time, epochs_logged(client, rid) if role(r) == "fold" else None)
        if role(r) == "fold" and now != (end_time, epochs):
            problems.append(f"{describe(r)} had finished and was trained again")
    resumed = after[run.info.run_id]
    resumed_tags = resumed.data.tags
    if resumed_tags.get("fus2net.resumed_from_epoch") is None:
        problems.append(f"{cancelled}: not resumed from its checkpoint")
    if epochs_logged(client, resumed.info.run_id) != EPOCHS:
        problems.append(
            f"{cancelled}: {epochs_logged(client, resumed.info.run_id)} epochs "
            f"logged, expected {EPOCHS}"
        )

    new_folds = [rid for rid, r in after.items() if role(r) == "fold" and rid not in before]
    finished_folds = [rid for rid in finished_before if role(before[rid]) == "fold"]
    cancelled_error = before[run.info.run_id].data.tags.get("fus2net.error", "")
    others = [r for r in sorted(before.values(), key=describe) if r.info.run_id != run.info.run_id]
    tags = resumed_tags
    lines = [
        "SLURM sweep check (hydra/launcher=slurm, MLflow server on PostgreSQL):",
        f"  sweep: 2 array tasks (optimizer=adam,sgd; 2 folds x {EPOCHS} epochs); {cancelled} "
        f"scancel'd mid-fold ({epochs_at_cancel}/{EPOCHS} epochs logged, last.ckpt on disk); "
        f"launcher exit {rc1} after {first_s:.0f} s",
        f"  after scancel: {cancelled} {cancelled_status} ({cancelled_error!r}); "
        + ", ".join(f"{describe(r)} {r.info.status}" for r in others),
        f"  rerun, same command: exit {rc2} after {second_s:.0f} s; "
        + ", ".join(f"{describe(c)} {c.info.status}" for c in sorted(cells, key=describe)),
        f"  fold runs: {len(folds)} for 2 x 2 folds, "
        + ", ".join(f"{describe(f)} {f.info.status}" for f in sorted(folds, key=describe)),
        f"  not trained again: {len(finished_folds)} folds finished before the rerun (same end "
        f"time, same epochs); new fold runs: {len(new_folds)}; {cancelled} reopened (attempts "
        f"{tags.get('fus2net.attempts')}, was {tags.get('fus2net.resumed_from')}, resumed at "
        f"epoch {tags.get('fus2net.resumed_from_epoch')}), "
        f"{epochs_logged(client, resumed.info.run_id)}/{EPOCHS} epochs in its history",
    ]
    print("\n" + "\n".join(lines))
    if new_folds:
        problems.append(f"{len(new_folds)} new fold run(s) in the rerun")
    if problems:
        for p in problems:
            print(f"  PROBLEM: {p}")
        fail(f"{len(problems)} problem(s); logs in {root}")
    print("  OK: the sweep completed with nothing lost and nothing trained twice")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
