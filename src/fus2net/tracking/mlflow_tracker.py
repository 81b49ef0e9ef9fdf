"""The one place that talks to MLflow: runs, params, metrics, artifacts, and a Lightning logger.

Every call goes through `MlflowClient` with explicit run ids (no fluent global state), so that
folds, cells and sweeps never log into each other's runs. Any tracking failure raises
`TrackingError` naming the store and what was being logged: a run is never lost silently.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

PARENT_TAG = "mlflow.parentRunId"
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_VALUE = 6000

T = TypeVar("T")
_CREDENTIALS = re.compile(r"(://[^:/@\s]+):[^@/\s]+@")


class TrackingError(RuntimeError):
    """The tracking store could not take what the job tried to log; the job must stop."""


def redact_uri(text: str) -> str:
    """Hide the password of any URI in `text` (`postgresql://u:***@host/db`)."""
    return _CREDENTIALS.sub(r"\1:***@", text)


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
            self.experiment_id = self.client.create_experiment(
                self.experiment_name, artifact_location=location
            )
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
        return f"open {redact_uri(self.uri)} in a browser"

    def lightning_logger(self, run_id: str) -> MlflowRunLogger:
        return MlflowRunLogger(self, run_id)


class MlflowRunLogger(Logger):
    """Lightning logger writing epoch metrics into an existing run, with step = epoch."""

    def __init__(self, tracker: MlflowTracker, run_id: str) -> None:
        super().__init__()
        self._tracker = tracker
        self._run_id = run_id

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self._run_id

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Params are logged once per run by the job itself (the flattened Hydra config)."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        clean = {re.sub(r"[^\w\-./ ]", "_", k): v for k, v in metrics.items()}
        if clean:
            self._tracker.log_metrics(
                self._run_id, clean, step=int(epoch) if epoch is not None else int(step or 0)
            )
