"""The MLflow model registry: a model package logged as a pyfunc model and registered, and a
registered version fetched back.

Both go through MLflow's own helpers: `mlflow.pyfunc.log_model(registered_model_name=...)`, and
the client's download URI of a version fetched by `mlflow.artifacts.download_artifacts`. The
fluent API of the first reads the process's tracking URI and active run, so registering sets
both for its own duration only (MLflow's own `_use_tracking_uri`, which restores an unset URI
as unset, so MLFLOW_TRACKING_URI keeps working afterwards).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fus2net.tracking import schema
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.uris import TrackingError, redact_uri


def register_package(
    tracker: MlflowTracker,
    run_id: str,
    name: str,
    package: Path,
    loader_module: str,
    examples: tuple[np.ndarray, Any],
    pip_requirements: list[str],
) -> str:
    """Log `package` (a folder) under run `run_id` as a pyfunc model of the `loader_module`
    flavour, with the signature of the (input, output) `examples`, and register it as a new
    version of `name`; returns that version.

    The input is a uint8 image array whose dimensions but the channels may vary (any batch and
    image size), so the signature's tensor shape is (-1, -1, -1, C).
    """
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import infer_signature
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    from mlflow.types import Schema, TensorSpec

    example = examples[0]
    signature = infer_signature(*examples)
    signature.inputs = Schema(
        [TensorSpec(example.dtype, (-1,) * (example.ndim - 1) + (example.shape[-1],))]
    )
    try:
        with _use_tracking_uri(tracker.uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=schema.REGISTERED_MODEL_DIR,
                loader_module=loader_module,
                data_path=str(package),
                signature=signature,
                input_example=example,
                pip_requirements=pip_requirements,
                registered_model_name=name,
            )
    except Exception as exc:
        raise TrackingError(
            f"MLflow tracking at {redact_uri(tracker.uri)} failed while registering model "
            f"{name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    # The fluent run ended FINISHED on the way out; the job still owns the run.
    tracker.set_status(run_id, "RUNNING")
    return str(info.registered_model_version)


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
