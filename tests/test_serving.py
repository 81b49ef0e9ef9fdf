"""Serving the registered model over HTTP (issue 25): `mlflow models serve` on 127.0.0.1 answers
a POST of base64 image bytes with the probabilities and the class at the model's operating point;
an unreadable image is an error row, not a failed request."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fus2net.inference import load_model, predict_files
from fus2net.inference.pyfunc import OUTPUT_COLUMNS, PyfuncModel, example_image
from jobs import run_train, store_uri, tiny, train_env

HOST = "127.0.0.1"  # the only address a test may use
MODEL = "models:/fus2net-synthetic/1"
TINY = tiny("dataset.image_size=96", "data.image_size=64")
START_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny job that registers its ensemble (as tests/test_clinical_job.py does)."""
    root = tmp_path_factory.mktemp("serving")
    args = [*TINY, "evaluation.gradcam.enabled=false", "evaluation.register_model=true"]
    run_train(args, cwd=root, timeout=600)
    return root


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_pyfunc_reads_image_bytes_and_gives_an_error_row_for_a_bad_one() -> None:
    class Constant:  # a model whose members always say 0.8 and 0.6
        spec = load_spec()

        def member_probabilities(self, images: np.ndarray) -> np.ndarray:
            return np.tile([[0.8], [0.6]], (1, len(images)))

    frame = pd.DataFrame(
        {
            "image": [
                example_image(40),
                b"not an image",
                base64.b64encode(example_image(50)).decode(),
            ]
        }
    )
    out = PyfuncModel(Constant()).predict(frame)
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    assert out.loc[0, "prob_malignant"] == pytest.approx(0.7)
    assert out.loc[0, "predicted_class"] == "malignant" and out.loc[0, "error"] == ""
    assert out.loc[1, "prob_malignant"] is None and out.loc[1, "predicted_class"] is None
    assert out.loc[1, "error"] == "row 1: not an image file PIL can identify"
    assert out.loc[2, "prob_malignant"] == pytest.approx(0.7)  # a base64 string also works
    assert (out.operating_point == "sens95").all() and (out.threshold == 0.65).all()
    out = PyfuncModel(Constant()).predict(frame, params={"operating_point": "default"})
    assert (out.threshold == 0.5).all()
    with pytest.raises(ValueError, match="'image' column"):
        PyfuncModel(Constant()).predict(pd.DataFrame({"img": [b""]}))


def load_spec():
    from fus2net.inference import Member, ModelSpec

    return ModelSpec(
        model={"name": "fus2net"},
        in_chans=3,
        image_size=32,
        class_names=["benign", "malignant"],
        members=[Member("a.pt", 0), Member("b.pt", 1)],
        thresholds={"default": 0.5, "sens95": 0.65},
        operating_point="sens95",
    )


def test_mlflow_models_serve_answers_a_post_of_images(registered: Path, tmp_path: Path) -> None:
    uri = store_uri(registered)
    image = next(p for p in sorted((registered / "data").rglob("*.png")) if "_mask" not in p.name)
    expected = predict_files(load_model(MODEL, tracking_uri=uri), [image], tmp_path, gradcam=False)

    port = _free_port()
    # the environment's scripts on PATH, as in an activated venv: the server execs `uvicorn`
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = train_env(registered, MLFLOW_TRACKING_URI=uri, PATH=path)
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", MODEL]
    command += ["--env-manager", "local", "--host", HOST, "--port", str(port)]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        base = f"http://{HOST}:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while _get(f"{base}/ping") != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not come up:\n{(tmp_path / 'serve.log').read_text()}")
            time.sleep(0.5)
        body = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [
                    [base64.b64encode(image.read_bytes()).decode()],
                    [base64.b64encode(b"GIF89a not really").decode()],
                    [base64.b64encode(_png(np.full((7, 9), 200, np.uint8))).decode()],
                ],
            }
        }
        status, answer = _post(f"{base}/invocations", body)
        assert status == 200, answer
        good, bad, small = answer["predictions"]
        assert good["prob_malignant"] == pytest.approx(expected.prob_malignant[0], abs=1e-5)
        assert good["prob_calibrated"] == pytest.approx(expected.prob_calibrated[0], abs=1e-5)
        assert good["predicted_class"] == expected.predicted_class[0]
        assert good["operating_point"] == expected.operating_point[0] == "sens95"
        assert good["threshold"] == pytest.approx(expected.threshold[0]) and good["error"] == ""
        assert bad["prob_malignant"] is None and bad["predicted_class"] is None
        assert bad["error"].startswith("row 1: ")
        assert small["error"] == "" and small["predicted_class"] in ("benign", "malignant")
        status, answer = _post(
            f"{base}/invocations", {**body, "params": {"operating_point": "default"}}
        )
        assert status == 200 and answer["predictions"][0]["threshold"] == 0.5
    finally:
        _stop(server)
        log.close()


def _stop(server: subprocess.Popen) -> None:
    """End the server and the workers it started (its own process group), whatever state
    it is in."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:  # the group is gone already
            break
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def test_registered_signature_and_input_example_say_image_bytes(registered: Path) -> None:
    from mlflow.models import Model
    from mlflow.tracking.artifact_utils import _download_artifact_from_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(store_uri(registered)):
        local = _download_artifact_from_uri(MODEL)
    model = Model.load(Path(local) / "MLmodel")
    signature = model.signature.to_dict()
    assert json.loads(signature["inputs"]) == [
        {"type": "binary", "name": "image", "required": True}
    ]
    outputs = [column["name"] for column in json.loads(signature["outputs"])]
    assert outputs == list(OUTPUT_COLUMNS)
    assert json.loads(signature["params"])[0]["name"] == "operating_point"
    example = model.load_input_example(local)
    with Image.open(io.BytesIO(example["image"][0])) as grey:
        assert grey.getextrema() == (128, 128)  # mid-grey, never a patient's image
