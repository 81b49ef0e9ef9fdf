"""Security: credentials never written, refused on the command line; model files never run code;
the CI's PostgreSQL reachable by its owner only.

Every test goes through a real entry point (`python -m fus2net.cli.train` / `.predict`, a real
MLflow server, the CI's PostgreSQL) and checks the files, store and output it leaves.
"""

from __future__ import annotations

import os
import pickle
import pwd
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from PIL import Image

from fus2net.tracking.uris import has_credentials, redact_uri, without_credentials
from jobs import run_module, run_train, tiny, train_env

TOKEN = "tok3nS3CRET"  # a token given as the user name: http://TOKEN@host
PASSWORD = "pa55S3CRET"
QUERY = "qu3rySECRET"


@pytest.mark.parametrize(
    ("text", "redacted", "bare"),
    [
        (
            "postgresql://u:pa55S3CRET@db:5432/x",
            "postgresql://u:***@db:5432/x",
            "postgresql://db:5432/x",
        ),
        ("http://tok3nS3CRET@host:5000", "http://***@host:5000", "http://host:5000"),
        (
            "https://h/d?token=qu3rySECRET&n=1",
            "https://h/d?token=***&n=1",
            "https://h/d?token=***&n=1",
        ),
        ("https://h/d?a=1&access_token=qu3rySECRET", "https://h/d?a=1&access_token=***", None),
        ("postgresql://h/db?password=qu3rySECRET", "postgresql://h/db?password=***", None),
        ("https://blob/c?sv=2&sig=qu3rySECRET%3D&se=1", "https://blob/c?sv=2&sig=***&se=1", None),
        ("https://s3/b/k?X-Amz-Signature=qu3rySECRET", "https://s3/b/k?X-Amz-Signature=***", None),
    ],
)
def test_every_credential_form_is_hidden(text: str, redacted: str, bare: str | None) -> None:
    assert has_credentials(text)
    assert redact_uri(text) == redacted
    assert redact_uri(f"tracking.uri={text} and more") == f"tracking.uri={redacted} and more"
    assert not has_credentials(redacted), "redacting twice changes nothing"
    assert without_credentials(text) == (bare or redacted)


@pytest.mark.parametrize(
    "text", ["sqlite:///a/b.db", "http://127.0.0.1:5000/x?n=1", "me@lab", "optimizer=adam"]
)
def test_text_without_credentials_is_left_alone(text: str) -> None:
    assert not has_credentials(text) and redact_uri(text) == text


# --- the command line: Hydra writes it into the job folder before our code runs --------------


@pytest.mark.parametrize(
    "args",
    [
        ["tracking=server", f"tracking.uri=http://ci:{PASSWORD}@127.0.0.1:5000"],
        ["tracking=server", f"tracking.uri=http://{TOKEN}@127.0.0.1:5000"],
        ["tracking=server", f"tracking.uri=https://127.0.0.1:5000/?token={QUERY}"],
        ["-m", "tracking=server", f"tracking.uri=http://127.0.0.1:1,http://{TOKEN}@127.0.0.1:2"],
        [
            "-m",
            "hparams_search=optuna",
            f"hydra.sweeper.storage=postgresql://h/optuna?password={QUERY}",
        ],
    ],
    ids=["user-password", "token-user", "query-token", "sweep", "optuna-storage"],
)
def test_credentials_on_the_command_line_are_refused_before_anything_is_written(
    tmp_path: Path, args: list[str]
) -> None:
    proc = run_train(args, tmp_path, check=False, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    key = args[-1].partition("=")[0]
    assert f"{key}: a credential" in proc.stderr
    assert "MLFLOW_TRACKING_TOKEN" in proc.stderr and "MLFLOW_TRACKING_PASSWORD" in proc.stderr
    assert "Traceback" not in out
    assert not [s for s in (TOKEN, PASSWORD, QUERY) if s in out], "the refusal repeats no secret"
    assert list(tmp_path.iterdir()) == [], "Hydra wrote nothing (no outputs/, no .hydra/)"


# --- credentials from the environment work and are hidden wherever they are written ----------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real MLflow server (SQLite store, served artifacts) on 127.0.0.1: (address, folder)."""
    folder = tmp_path_factory.mktemp("server")
    port = _free_port()
    with open(folder / "server.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--workers", "1",
             "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    address = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"{address}/health", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None, (folder / "server.log").read_text()
                time.sleep(1)
        yield address, folder
    finally:
        os.killpg(proc.pid, 15)  # its session: the server and its worker
        proc.wait(timeout=60)


def _files_holding(secrets: tuple[str, ...], *roots: Path) -> list[str]:
    return [
        f"{path}: {secret}"
        for root in roots
        for path in root.rglob("*")
        if path.is_file()
        for secret in secrets
        if secret.encode() in path.read_bytes()
    ]


def test_environment_credentials_work_and_are_hidden_everywhere(
    tmp_path: Path, mlflow_server: tuple[str, Path]
) -> None:
    """A token as the tracking URI's user (MLFLOW_TRACKING_URI) and a query token in Optuna's
    storage (`${oc.env:...}` on the command line): the sweep runs, and neither secret is in
    the store (its database: params, tags, inputs; its artifacts), the job's files or output."""
    from mlflow.tracking import MlflowClient

    address, server = mlflow_server
    root = tmp_path / "job"
    root.mkdir()
    experiment = f"sec-{uuid.uuid4().hex[:8]}"
    storage = f"sqlite:///file:{tmp_path / 'optuna.db'}?token={QUERY}&uri=true"
    env = train_env(
        root,
        MLFLOW_TRACKING_URI=address.replace("://", f"://{TOKEN}@"),
        SEC_OPTUNA_STORAGE=storage,
        OMP_NUM_THREADS="1",
    )
    args = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=1",
            "hydra.sweeper.storage=${oc.env:SEC_OPTUNA_STORAGE}", "tracking=server",
            f"tracking.experiment={experiment}", *tiny("trainer.threads=1")]  # fmt: skip
    proc = run_train(args, root, env=env)
    out = proc.stdout + proc.stderr
    assert "?token=***" in out, "the sweeper's 'Storage:' line is logged, redacted"
    assert not [s for s in (TOKEN, QUERY) if s in out]

    client = MlflowClient(tracking_uri=address)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    cells = [r for r in runs if r.data.tags["fus2net.role"] == "cell"]
    assert len(cells) == 1 and cells[0].info.status == "FINISHED", "the token URI works"
    assert len(runs) == 3, "a cell run and its 2 fold runs"
    for run in runs:
        assert run.data.params["tracking.uri"] == address.replace("://", "://***@")
        config = client.download_artifacts(run.info.run_id, "provenance/config.yaml", tmp_path)
        assert "uri: http://***@127.0.0.1" in Path(config).read_text()
    assert _files_holding((TOKEN, QUERY), server, root) == []


# --- fus2net-predict on model files that are malicious, truncated or empty --------------------

SIZE = 64


class _Payload:
    """Unpickled, it runs `touch <marker>`: what a malicious model.pt does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A job-output-like folder: one untrained fold model and its fus2net_model.json."""
    from fus2net.inference import Member, ModelSpec
    from fus2net.models import create_model

    root = tmp_path / "job"
    (root / "fold_0").mkdir(parents=True)
    model = create_model("fus2net", in_chans=3, num_classes=2)
    torch.save(model.state_dict(), root / "fold_0" / "model.pt")
    ModelSpec(
        model={"name": "fus2net"}, in_chans=3, image_size=SIZE,
        class_names=["benign", "malignant"], members=[Member("fold_0/model.pt", 0)],
        thresholds={"default": 0.5}, operating_point="default",
    ).write(root)  # fmt: skip
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(tmp_path / "scan.png")
    return root


def _spoil(weights: Path, how: str, marker: Path) -> None:
    if how == "malicious":
        torch.save({"stem.weight": _Payload(marker)}, weights)
    elif how == "malicious-pickle":
        weights.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "empty":
        weights.write_bytes(b"")
    elif how == "not-a-state-dict":
        torch.save(torch.zeros(3), weights)
    elif how == "other-model":
        torch.save({"fc.weight": torch.zeros(2, 2)}, weights)


@pytest.mark.parametrize(
    ("how", "target"),
    [
        ("malicious", "folder"),
        ("malicious-pickle", "member"),
        ("truncated", "folder"),
        ("empty", "member"),
        ("not-a-state-dict", "folder"),
        ("other-model", "folder"),
    ],
)
def test_predict_refuses_a_bad_model_file_naming_it(
    package: Path, tmp_path: Path, how: str, target: str
) -> None:
    weights = package / "fold_0" / "model.pt"
    marker = tmp_path / "pwned"
    _spoil(weights, how, marker)
    if how.startswith("malicious"):  # the file is truly malicious: a plain load runs its code
        copy = tmp_path / "copy.pt"
        _spoil(copy, how, tmp_path / "ran")
        if how == "malicious-pickle":
            pickle.loads(copy.read_bytes())
        else:
            torch.load(copy, weights_only=False)
        assert (tmp_path / "ran").exists()
    model = package if target == "folder" else weights
    proc = run_module(
        "fus2net.cli.predict",
        [str(model), str(tmp_path / "scan.png"), "--out", str(tmp_path / "out"), "--no-gradcam"],
        tmp_path, check=False, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"{weights}:" in proc.stderr, "the message names the file"
    assert "Traceback" not in out and "weights_only" not in out
    assert not marker.exists(), "the pickled code did not run"
    if how.startswith("malicious"):
        assert "Python code" in proc.stderr or "not a PyTorch weights file" in proc.stderr


# --- the CI's PostgreSQL (.ci/tracking-server.sh): its owner's alone ---------------------------

CI_STORAGE = os.environ.get("FUS2NET_TEST_OPTUNA_STORAGE", "")
CI_SOCKETS = os.environ.get("FUS2NET_TEST_PG_SOCKET_DIR", "")


def _psql(*args: str, user: str, password: bool = False) -> subprocess.CompletedProcess[str]:
    """psql as OS user `user` (runuser), with PGPASSWORD only when `password`."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))
    psql = str(found[-1]) if found else shutil.which("psql") or "psql"
    env = ["env"] if password else ["env", "-u", "PGPASSWORD"]
    command = ["runuser", "-u", user, "--", *env, psql, "-w", "-X", "-At", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(
    not (CI_STORAGE.startswith("postgresql") and CI_SOCKETS) or os.geteuid() != 0,
    reason="needs the CI's PostgreSQL (FUS2NET_TEST_OPTUNA_STORAGE and _PG_SOCKET_DIR, .ci/run) "
    "and root",
)
def test_ci_postgresql_admits_only_its_owner() -> None:
    url = urlsplit(CI_STORAGE)
    port, db = str(url.port), url.path.lstrip("/")
    tcp = ["-h", "127.0.0.1", "-p", port]
    ok = _psql(*tcp, "-U", url.username or "", "-d", db, "-c", "SELECT current_user",
               user="root", password=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr  # the tests' way in: TCP with PGPASSWORD
    sockets = Path(CI_SOCKETS)
    assert (sockets / f".s.PGSQL.{port}").is_socket()
    info = sockets.stat()
    assert info.st_mode & 0o777 == 0o700, "the socket's folder is its owner's alone"
    assert info.st_uid == pwd.getpwnam("postgres").pw_uid
    rules = "SELECT DISTINCT auth_method FROM pg_hba_file_rules"
    rules = _psql("-h", str(sockets), "-p", port, "-U", "postgres", "-c", rules, user="postgres")
    assert rules.returncode == 0, rules.stderr
    assert "trust" not in rules.stdout.split() and "peer" in rules.stdout.split()
    for role in ("postgres", url.username or "fus2net"):
        by_socket = _psql("-h", str(sockets), "-p", port, "-U", role, "-d", db, user="nobody")
        assert by_socket.returncode != 0 and "Permission denied" in by_socket.stderr
        by_tcp = _psql(*tcp, "-U", role, "-d", db, "-c", "SELECT 1", user="nobody")
        assert by_tcp.returncode != 0 and "password" in by_tcp.stderr, by_tcp.stdout
