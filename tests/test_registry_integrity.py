"""Registration registers only a complete package (issue 24): the package folder is verified
before anything is logged, and the logged model's files after, so that a packaging interrupted
halfway is found by the next registration, packaged again and only then registered.

Through the real code: an untrained two-member `fus2net` package, a SQLite store in the test's
folder, `register_package` as the clinical step calls it (`fus2net.clinical.package`).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from fus2net.inference import Member, ModelSpec, load_model, load_package, pyfunc
from fus2net.inference.model_registry import (
    PyfuncPackage,
    is_packaged,
    package_missing,
    register_package,
)
from fus2net.inference.spec import export_package
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.uris import TrackingError
from jobs import untrained_package

NAME = "fus2net-integrity"
SIZE = 64
WEIGHT = "data/model_package/weights/member_1.pt"  # where MLflow puts the package's data


@pytest.fixture(scope="module")
def job_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job's output folder: two untrained fold models and their fus2net_model.json."""
    return untrained_package(tmp_path_factory.mktemp("job"), SIZE)


def _package(job_folder: Path, folder: Path) -> PyfuncPackage:
    """The cell's package as `fus2net.clinical.package.register` builds it."""
    export_package(job_folder / "fus2net_model.json", folder)
    example = pd.DataFrame({pyfunc.IMAGE_COLUMN: [pyfunc.example_image(SIZE)]})
    output = pyfunc.PyfuncModel(load_package(job_folder)).predict(example)
    return PyfuncPackage(folder, pyfunc.LOADER_MODULE, (example, output), pyfunc.pip_requirements())


def _cell(tmp_path: Path) -> tuple[MlflowTracker, str, str]:
    """A store with a cell run and its ensemble logged model, READY (as scoring leaves it)."""
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "fus2net", tmp_path / "art")
    run_id = tracker.start_run("cell", {})
    model_id = tracker.create_model("cell-ensemble", run_id, {}, {})
    tracker.finalize_model(model_id)
    return tracker, run_id, model_id


def _register(tracker: MlflowTracker, model_id: str, run_id: str, package: PyfuncPackage) -> str:
    return register_package(
        tracker, model_id, run_id, NAME, package, description="test", tags={"t": "1"}
    )


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated"])
def test_a_package_with_a_bad_weights_file_is_refused_before_anything_is_logged(
    job_folder: Path, tmp_path: Path, damage: str
) -> None:
    tracker, run_id, model_id = _cell(tmp_path)
    package = _package(job_folder, tmp_path / "model_package")
    weights = package.folder / "weights" / "member_1.pt"
    if damage == "missing":
        weights.unlink()
    elif damage == "empty":
        weights.write_bytes(b"")
    else:
        weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"not packaged, nothing logged: .*member_1\.pt"):
        _register(tracker, model_id, run_id, package)
    assert tracker.model_files(model_id) == {}
    assert tracker.client.search_registered_models() == []


def test_a_spec_naming_a_file_outside_the_package_is_refused(
    job_folder: Path, tmp_path: Path
) -> None:
    tracker, run_id, model_id = _cell(tmp_path)
    package = _package(job_folder, tmp_path / "model_package")
    spec = ModelSpec.read(package.folder / "fus2net_model.json")
    spec.members = [Member("../fold_0/model.pt", 0)]
    spec.write(package.folder)
    with pytest.raises(ValueError, match="points outside the package folder"):
        _register(tracker, model_id, run_id, package)
    assert tracker.model_files(model_id) == {}


def test_an_interrupted_packaging_is_found_packaged_again_and_registered(
    job_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    tracker, run_id, model_id = _cell(tmp_path)
    package = _package(job_folder, tmp_path / "model_package")

    def upload_until_the_weights(self: LocalArtifactRepository, local_dir: str, path=None) -> None:
        """MLflow's upload, in its own order (os.walk), stopped at the first weights file."""
        for folder, _, names in os.walk(local_dir):
            for name in names:
                source = Path(folder, name)
                if source.parent.name == "weights":
                    raise ConnectionError("the connection to the artifact store was lost")
                target = Path(self.artifact_dir, path or "", source.relative_to(local_dir))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(LocalArtifactRepository, "log_artifacts", upload_until_the_weights)
        with pytest.raises(TrackingError, match="failed while packaging model"):
            _register(tracker, model_id, run_id, package)
    files = tracker.model_files(model_id)
    assert "MLmodel" in files and "data/model_package/fus2net_model.json" in files
    assert not is_packaged(tracker, model_id)  # MLmodel alone is not a package
    assert package_missing(tracker, model_id) == [
        "data/model_package/weights/member_0.pt",
        WEIGHT,
    ]
    assert tracker.client.search_registered_models() == []

    with caplog.at_level(logging.WARNING, logger="fus2net.inference.model_registry"):
        version = _register(tracker, model_id, run_id, package)
    assert version == "1"
    assert f"logged model {model_id} holds an incomplete package (missing " in caplog.text
    assert WEIGHT in caplog.text
    assert is_packaged(tracker, model_id)
    assert tracker.client.get_model_version(NAME, "1").source == f"models:/{model_id}"

    # the registered version loads and predicts, by fus2net and by MLflow alone
    expected = package.examples[1]
    loaded = load_model(f"models:/{NAME}/1", tracking_uri=tracker.uri)
    assert len(loaded.members) == 2
    example = package.examples[0]
    got = pyfunc.PyfuncModel(loaded).predict(example)
    assert got.prob_malignant.to_numpy() == pytest.approx(expected.prob_malignant.to_numpy())
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.uri)
    served = mlflow.pyfunc.load_model(f"models:/{NAME}/1").predict(example)
    assert served.prob_malignant.to_numpy() == pytest.approx(expected.prob_malignant.to_numpy())


def test_a_complete_logged_package_is_registered_again_as_it_is_and_a_lost_file_is_found(
    job_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracker, run_id, model_id = _cell(tmp_path)
    package = _package(job_folder, tmp_path / "model_package")
    assert _register(tracker, model_id, run_id, package) == "1"
    assert package_missing(tracker, model_id) == []
    assert _register(tracker, model_id, run_id, None) == "2"  # nothing to copy

    # a weights file lost from the artifact store: not registered without a package ...
    location = tracker.client.get_logged_model(model_id).artifact_location
    lost = Path(location.removeprefix("file://")) / WEIGHT
    lost.unlink()
    assert package_missing(tracker, model_id) == [WEIGHT]
    with pytest.raises(ValueError, match=f"no complete package \\(missing {WEIGHT}\\)"):
        _register(tracker, model_id, run_id, None)
    # ... and packaged again with one
    with caplog.at_level(logging.WARNING, logger="fus2net.inference.model_registry"):
        assert _register(tracker, model_id, run_id, package) == "3"
    assert f"(missing {WEIGHT}): packaging it again" in caplog.text
    assert lost.is_file() and lost.stat().st_size > 0


@pytest.mark.slow
def test_a_job_rerun_packages_a_registered_model_again_when_its_weights_were_lost(
    tmp_path: Path,
) -> None:
    """The whole path: a tiny job registers its ensemble; a weights file of the logged model is
    lost from the artifact store; the same command again (`register_stored`) finds it, packages
    the cell's runs again into the same logged model, registers version 2, which predicts."""
    from jobs import run_train, sqlite_client, store_uri, tiny

    args = [
        *tiny("dataset.image_size=96", "data.image_size=64"),
        "evaluation.gradcam.enabled=false",
        "evaluation.register_model=true",
    ]
    run_train(args, cwd=tmp_path, timeout=600)
    client = sqlite_client(tmp_path)
    source = client.get_model_version("fus2net-synthetic", "1").source
    model_id = source.removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    lost = Path(location.removeprefix("file://")) / "data/model_package/weights/member_0.pt"
    lost.unlink()

    rerun = run_train(args, cwd=tmp_path, timeout=600)
    output = rerun.stdout + rerun.stderr
    assert "nothing to train" in output
    assert f"logged model {model_id} holds an incomplete package (missing " in output
    assert "registered models:/fus2net-synthetic/2" in output
    assert client.get_model_version("fus2net-synthetic", "2").source == source
    assert lost.is_file() and lost.stat().st_size > 0
    image = next(p for p in sorted((tmp_path / "data").rglob("*.png")) if "_mask" not in p.name)
    frame = pd.DataFrame({pyfunc.IMAGE_COLUMN: [image.read_bytes()]})
    model = load_model("models:/fus2net-synthetic/2", tracking_uri=store_uri(tmp_path))
    out = pyfunc.PyfuncModel(model).predict(frame)
    assert out.loc[0, "error"] == "" and 0 <= out.loc[0, "prob_malignant"] <= 1
