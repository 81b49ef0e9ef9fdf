"""The MLflow model registry: a model package logged as a pyfunc model and registered, and a
registered version fetched back.

Both go through MLflow's own helpers: `mlflow.pyfunc.log_model(model_id=...)` writes the package
into the cell's ensemble logged model (no run is made active: the model already names its run),
the client registers a version of that model with its description and tags, and a version is
fetched back by the client's download URI and `mlflow.artifacts.download_artifacts`. The pyfunc
helper and the registry's reading of a `models:/<id>` source use the process's tracking URI, so
it is set for their duration only (MLflow's own `_use_tracking_uri`, which restores an unset URI
as unset, so MLFLOW_TRACKING_URI keeps working afterwards).

Only a complete package is registered: the folder is verified before it is logged, and the
logged model's files after (`package_missing`), so a packaging interrupted halfway is found and
done again by the next registration instead of being registered as it is.
"""

from __future__ import annotations

import logging
import posixpath
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fus2net.inference.spec import SPEC_FILE, ModelSpec, verify_package
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.uris import TrackingError, redact_uri

log = logging.getLogger(__name__)

MLMODEL = "MLmodel"  # what makes a logged model's files a loadable MLflow model
PYFUNC_FLAVOR = "python_function"  # its `data`: where the package folder was copied


@dataclass(frozen=True)
class PyfuncPackage:
    """A model package folder, as the pyfunc model of the `loader_module` flavour, with the
    (input, output) `examples` its signature is inferred from and its serving requirements."""

    folder: Path
    loader_module: str
    examples: tuple[Any, Any]  # (input: a DataFrame of image bytes, or an image array; output)
    pip_requirements: list[str]
    params: dict[str, str] = field(default_factory=dict)  # inference params and their defaults


def register_package(
    tracker: MlflowTracker,
    model_id: str,
    run_id: str,
    name: str,
    package: PyfuncPackage | None,
    *,
    description: str,
    tags: Mapping[str, str],
) -> str:
    """Register logged model `model_id` (of run `run_id`) as a new version of `name`, with its
    `description` and `tags`; returns that version.

    Only a complete package is registered. One already complete in the logged model (registered
    before) is registered again as it is, nothing copied. Otherwise `package` is verified
    (`verify_package`: a package with a missing or unreadable file is never logged), logged
    with the signature of its examples (over whatever an interrupted packaging left: the same
    paths are written again), and the logged model checked again before it is registered. The
    input is a DataFrame column of image file bytes (the signature's `binary` column: base64
    strings in JSON, decoded by MLflow's scoring server), or, in older packages, a uint8 image
    array whose dimensions but the channels may vary, whose tensor shape is then (-1, -1, -1, C).
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    missing = package_missing(tracker, model_id)
    if missing:
        if package is None:
            raise ValueError(
                f"logged model {model_id} holds no complete package (missing "
                f"{', '.join(missing)}) and none was given"
            )
        # a packaging that stopped halfway, or files lost since; not a model never packaged
        if missing != [MLMODEL] or tracker.model_files(model_id):
            log.warning(
                "logged model %s holds an incomplete package (missing %s): packaging it again",
                model_id,
                ", ".join(missing),
            )
        try:
            verify_package(package.folder)
        except ValueError as err:
            raise ValueError(f"model {name!r} not packaged, nothing logged: {err}") from None
        _log_pyfunc(tracker, model_id, name, package)
        missing = package_missing(tracker, model_id)
        if missing:
            raise TrackingError(
                f"MLflow tracking at {redact_uri(tracker.uri)}: logged model {model_id} lacks "
                f"{', '.join(missing)} right after packaging model {name!r}; nothing registered. "
                "Check the artifact store (space, permissions) and register again"
            )
    # The registry resolves a `models:/<id>` source with a client of the process's tracking
    # URI (MLflow's own TODO): without this one, it would read (and create) ./mlflow.db.
    with _use_tracking_uri(tracker.uri):
        return tracker.register_version(name, model_id, run_id, description, tags)


def is_packaged(tracker: MlflowTracker, model_id: str) -> bool:
    """Whether logged model `model_id` holds a complete pyfunc package (`package_missing`)."""
    return not package_missing(tracker, model_id)


def package_missing(tracker: MlflowTracker, model_id: str) -> list[str]:
    """What logged model `model_id` lacks of a complete pyfunc package, empty when nothing:
    `MLmodel` with a python_function flavour naming its data folder, the `fus2net_model.json`
    there (which passes `ModelSpec.read`), and every member's weights file it names, non-empty.

    The logged files are what is checked: `MLmodel` is written before the data it points to
    is, so an upload that stopped halfway leaves one that loads nothing; and the logged
    model's status says nothing here (it is READY since the cell was scored, and
    `log_model(model_id=...)` leaves it as it is)."""
    from mlflow.models import Model

    files = tracker.model_files(model_id)
    if MLMODEL not in files:
        return [MLMODEL]
    with tempfile.TemporaryDirectory(prefix="fus2net-logged-") as tmp:
        try:
            mlmodel = Model.load(tracker.download_model_file(model_id, MLMODEL, Path(tmp)))
            data = mlmodel.flavors.get(PYFUNC_FLAVOR, {}).get("data")
        except Exception as err:  # unreadable YAML, a failed download
            return [f"a readable {MLMODEL} ({type(err).__name__}: {err})"]
        if not data:
            return [f"the {PYFUNC_FLAVOR} data folder in {MLMODEL}"]
        specs = sorted(
            p for p in files if posixpath.basename(p) == SPEC_FILE and p.startswith(f"{data}/")
        )
        if not specs:
            return [f"{data}/{SPEC_FILE}"]
        try:
            spec = ModelSpec.read(tracker.download_model_file(model_id, specs[0], Path(tmp)))
        except ValueError as err:
            return [f"a valid {specs[0]} ({err})"]
    folder = posixpath.dirname(specs[0])
    weights = [posixpath.normpath(f"{folder}/{m.weights}".replace("\\", "/")) for m in spec.members]
    return [w for w in weights if w not in files or files[w] == 0]


def _log_pyfunc(tracker: MlflowTracker, model_id: str, name: str, package: PyfuncPackage) -> None:
    import mlflow.pyfunc
    from mlflow.models import infer_signature
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    from mlflow.types import Schema, TensorSpec

    example = package.examples[0]
    signature = infer_signature(*package.examples, params=package.params or None)
    if isinstance(example, np.ndarray):  # any batch and image size, fixed channels
        signature.inputs = Schema(
            [TensorSpec(example.dtype, (-1,) * (example.ndim - 1) + (example.shape[-1],))]
        )
    try:
        with _use_tracking_uri(tracker.uri):
            mlflow.pyfunc.log_model(
                model_id=model_id,
                loader_module=package.loader_module,
                data_path=str(package.folder),
                signature=signature,
                input_example=example,
                pip_requirements=package.pip_requirements,
            )
    except Exception as exc:
        raise TrackingError(
            f"MLflow tracking at {redact_uri(tracker.uri)} failed while packaging model "
            f"{name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def download_version(tracking_uri: str, uri: str, dst: Path) -> Path:
    """The files of registered model `uri` (`models:/<name>/<version>`; `/latest` or no
    version: the newest) from the registry of the store at `tracking_uri`, in `dst`."""
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    name, _, version = uri.removeprefix("models:/").strip("/").partition("/")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    dst.mkdir(parents=True, exist_ok=True)
    try:
        if version in ("", "latest"):
            found = client.search_model_versions(f"name = '{name}'")
            if not found:
                raise ValueError("no version registered")
            version = str(max(int(v.version) for v in found))
        source = client.get_model_version_download_uri(name, version)
        return Path(
            download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=tracking_uri)
        )
    except Exception as exc:
        raise TrackingError(
            f"{uri}: no such registered model version in {redact_uri(tracking_uri)} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
