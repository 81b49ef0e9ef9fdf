"""The one place that talks to MLflow: runs, params, metrics, artifacts, and a Lightning logger.

Every call goes through `MlflowClient` with explicit run ids (no fluent global state), so that
folds, cells and sweeps never log into each other's runs. Any tracking failure raises
`TrackingError` naming the store and what was being logged: a run is never lost silently.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse
from urllib.request import url2pathname

PARENT_TAG = "mlflow.parentRunId"
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_VALUE = 6000

T = TypeVar("T")
_CREDENTIALS = re.compile(r"(://[^:/@\s]+):[^@/\s]+@")
_USER_INFO = re.compile(r"://[^/@\s]+@")


class TrackingError(RuntimeError):
    """The tracking store could not take what the job tried to log; the job must stop."""


def redact_uri(text: str) -> str:
    """Hide the password of any URI in `text` (`postgresql://u:***@host/db`)."""
    return _CREDENTIALS.sub(r"\1:***@", text)


def without_credentials(uri: str) -> str:
    """`uri` without its user info (`https://host/...`): safe to print, store or link to."""
    return _USER_INFO.sub("://", uri)


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the store fus2net-train writes by default (tracking=local,
    under FUS2NET_HOME or the current folder): what the reading CLIs open unless told."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(os.environ.get("FUS2NET_HOME", ".")).resolve()
    return f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"


def normalize_tracking_uri(uri: str) -> str:
    """Make a relative `sqlite:///path` absolute and create its folder (MLflow would not)."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        path = path if path.is_absolute() else Path.cwd() / path
        path = path.resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in uri or uri.startswith("file:"):
        raise TrackingError(
            f"tracking.uri={uri!r}: MLflow 3.17+ refuses a plain-folder store. Use "
            "tracking=local (SQLite under mlruns/) or tracking=server with an http:// URI."
        )
    return uri


def _guarded(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(self: MlflowTracker, *args: Any, **kwargs: Any) -> T:
            try:
                return fn(self, *args, **kwargs)
            except TrackingError:
                raise
            except Exception as exc:  # MlflowException, SQLAlchemy, requests, OSError ...
                raise TrackingError(
                    f"MLflow tracking at {redact_uri(self.uri)} failed while {what}: "
                    f"{type(exc).__name__}: {exc}\nThe job stops so that no result is lost "
                    "silently. Check that the tracking store is reachable and writable "
                    "(tracking.uri), then run the same command again."
                ) from exc

        return wrapper

    return decorate


class MlflowTracker:
    """A tracking store and one experiment in it."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None) -> None:
        # MLflow prints each run's URL, credentials of the tracking URI included, when the run
        # ends; the job prints one redacted link to the UI instead.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.uri = uri
        self.experiment_name = experiment
        self._connect(artifact_location)

    @_guarded("opening the experiment")
    def _connect(self, artifact_location: str | None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = normalize_tracking_uri(self.uri)

        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is None:
            location = None
            if artifact_location:
                folder = Path(artifact_location).resolve()
                folder.mkdir(parents=True, exist_ok=True)
                location = folder.as_uri()
            try:
                self.experiment_id = self.client.create_experiment(
                    self.experiment_name, artifact_location=location
                )
            except Exception:
                # Parallel jobs of one sweep may create the experiment at the same moment:
                # the one that lost the race uses the winner's experiment.
                found = self.client.get_experiment_by_name(self.experiment_name)
                if found is None:
                    raise
                self.experiment_id = found.experiment_id
        else:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            self.experiment_id = found.experiment_id

    @_guarded("creating a run")
    def start_run(self, name: str, tags: Mapping[str, str], parent_id: str | None = None) -> str:
        tags = {k: str(v) for k, v in tags.items()}
        if parent_id:
            tags[PARENT_TAG] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    @_guarded("logging params")
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_VALUE]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])

    @_guarded("logging metrics")
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=items[i : i + MAX_METRICS_PER_BATCH])

    @_guarded("setting tags")
    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    @_guarded("uploading artifacts")
    def log_artifacts(
        self, run_id: str, paths: Iterable[Path], artifact_path: str | None = None
    ) -> None:
        for path in paths:
            self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    @_guarded("ending a run")
    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    @_guarded("searching runs")
    def search_runs(self, filter_string: str, max_results: int = 1000) -> list[Any]:
        return list(
            self.client.search_runs(
                [self.experiment_id], filter_string=filter_string, max_results=max_results
            )
        )

    def ui_command(self) -> str:
        """The command that opens this store in the MLflow UI, on loopback only."""
        if self.uri.startswith("sqlite:///"):
            store = self.uri
            with contextlib.suppress(ValueError):
                store = "sqlite:///" + str(Path(self.uri[10:]).relative_to(Path.cwd()))
            return f"mlflow ui --backend-store-uri {store} --host 127.0.0.1 --port 5000"
        return f"open {without_credentials(self.uri)} in a browser"

    def lightning_logger(self, run_id: str) -> Any:
        """A Lightning logger writing into `run_id` (imported here: Lightning is slow to load)."""
        from fus2net.tracking.lightning_logger import MlflowRunLogger

        return MlflowRunLogger(self, run_id)

    # --- Reading runs back and the model registry (prediction, fus2net.inference) ---

    @_guarded("reading a run")
    def get_run(self, run_id: str) -> Any:
        return self.client.get_run(run_id)

    @_guarded("searching child runs")
    def child_runs(self, run_id: str) -> list[Any]:
        """The runs whose parent is `run_id` (a cell's folds), in the parent's experiment."""
        experiment = self.client.get_run(run_id).info.experiment_id
        return list(
            self.client.search_runs(
                [experiment], filter_string=f"tags.`{PARENT_TAG}` = '{run_id}'", max_results=1000
            )
        )

    @_guarded("downloading artifacts")
    def download_artifacts(self, run_id: str, path: str, dst: Path) -> Path:
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(dst)))

    @_guarded("registering a model")
    def register_model(
        self,
        run_id: str,
        name: str,
        package: Path,
        loader_module: str,
        examples: tuple[Any, Any],
        pip_requirements: list[str],
        artifact_path: str = "registered_model",
    ) -> str:
        """Log `package` (a folder) under the run as a pyfunc model of the `loader_module`
        flavour, with the signature of (input, output) `examples` and the input example, and
        register it as a new version of `name`; returns that version.

        The input is a uint8 image array whose dimensions but the channels may vary (any batch
        and image size), so the signature's tensor shape is (-1, -1, -1, C).
        """
        import tempfile

        import mlflow.pyfunc
        from mlflow.exceptions import MlflowException
        from mlflow.models import infer_signature
        from mlflow.types import Schema, TensorSpec

        signature = infer_signature(*examples)
        example = examples[0]
        shape = (-1,) * (example.ndim - 1) + (example.shape[-1],)
        signature.inputs = Schema([TensorSpec(example.dtype, shape)])
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / artifact_path
            mlflow.pyfunc.save_model(
                path=str(local),
                loader_module=loader_module,
                data_path=str(package),
                signature=signature,
                input_example=example,
                pip_requirements=pip_requirements,
            )
            self.client.log_artifacts(run_id, str(local), artifact_path)
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        return str(self.client.create_model_version(name, source=source, run_id=run_id).version)

    @_guarded("downloading a registered model")
    def download_model_version(self, name: str, version: str | None, dst: Path) -> Path:
        """The files of `name` at `version` (None: the latest) in `dst`."""
        from mlflow.artifacts import download_artifacts

        if version is None:
            found = self.client.search_model_versions(f"name = '{name}'")
            if not found:
                raise TrackingError(f"no registered model named {name!r} in {self.uri}")
            version = str(max(int(v.version) for v in found))
        source = self.client.get_model_version(name, version).source
        dst.mkdir(parents=True, exist_ok=True)
        return Path(download_artifacts(artifact_uri=source, dst_path=str(dst)))

    # Reading results back (fus2net-compare).

    @classmethod
    def open_existing(cls, uri: str, experiment: str) -> MlflowTracker:
        """An experiment that must already exist: a reader must not create an empty one."""
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
            raise TrackingError(
                f"no tracking store at {uri[len('sqlite:///') :]}: run fus2net-train from this "
                "folder first, or give the store with --tracking-uri"
            )
        from mlflow.tracking import MlflowClient

        try:
            client = MlflowClient(tracking_uri=normalize_tracking_uri(uri))
            found = client.get_experiment_by_name(experiment)
            names = sorted(e.name for e in client.search_experiments())
        except Exception as exc:
            raise TrackingError(
                f"MLflow tracking at {redact_uri(uri)} could not be read: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if found is None or found.lifecycle_stage == "deleted":
            raise TrackingError(
                f"experiment {experiment!r} not found in {redact_uri(uri)}; it has: "
                f"{', '.join(names) or 'no experiments'} (choose one with --experiment)"
            )
        return cls(uri, experiment)

    @_guarded("searching runs")
    def search_all_runs(
        self,
        filter_string: str = "",
        order_by: list[str] | None = None,
        max_results: int | None = None,
        page_size: int = 1000,
    ) -> list[Any]:
        """Every matching run of the experiment, page by page: one store call per page."""
        runs: list[Any] = []
        token = None
        while max_results is None or len(runs) < max_results:
            want = page_size if max_results is None else min(page_size, max_results - len(runs))
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=filter_string,
                order_by=order_by,
                max_results=want,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
        return runs

    @_guarded("reading an artifact")
    def artifact_file(self, run: Any, path: str, download_dir: Path) -> Path:
        """One artifact of `run` as a local file: read in place from a local store, else fetched."""
        uri = str(run.info.artifact_uri)
        if uri.startswith("file:"):
            local = Path(url2pathname(urlparse(uri).path)) / path
            if local.is_file():
                return local
        download_dir.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run.info.run_id, path, str(download_dir)))

    # Resuming sweeps and jobs (fus2net.tracking.resume).

    @_guarded("changing a run's status")
    def set_status(self, run_id: str, status: str) -> None:
        """Reopen a run (RUNNING) or park it (SCHEDULED) without touching its end time."""
        self.client.update_run(run_id, status=status)

    @_guarded("deleting a tag")
    def delete_tag(self, run_id: str, key: str) -> None:
        if key in self.client.get_run(run_id).data.tags:
            self.client.delete_tag(run_id, key)

    @_guarded("deleting a run")
    def delete_run(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    @_guarded("listing artifacts")
    def list_artifacts(self, run_id: str, path: str | None = None) -> list[Any]:
        return list(self.client.list_artifacts(run_id, path))
