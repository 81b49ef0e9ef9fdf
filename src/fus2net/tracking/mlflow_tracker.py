"""The one place that talks to MLflow's tracking store: runs, params, metrics, artifacts.

Every call goes through `MlflowClient` with explicit run ids (no fluent global state), so that
folds, cells and sweeps never log into each other's runs. Any tracking failure raises
`TrackingError` naming the store and what was being logged: a run is never lost silently.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse
from urllib.request import url2pathname

from fus2net.tracking import schema
from fus2net.tracking.uris import (
    TrackingError,
    normalize_tracking_uri,
    redact_uri,
    require_existing_store,
    ui_command,
)

if TYPE_CHECKING:
    from mlflow.entities import FileInfo, Run

MAX_PARAM_VALUE = 6000
T = TypeVar("T")


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

    def __init__(
        self,
        uri: str,
        experiment: str,
        artifact_location: str | None = None,
        *,
        create: bool = True,
    ) -> None:
        """Open `experiment` in the store at `uri`; with `create` (a job), create or restore
        it; without (a reader), it must exist and nothing is written."""
        self.uri = uri
        self.experiment_name = experiment
        if create:
            self._connect(artifact_location)
        else:
            self._open_existing()

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
        tags = {k: schema.tag_value(v) for k, v in tags.items()}
        if parent_id:
            tags[schema.PARENT] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    @_guarded("logging params")
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_VALUE]) for k, v in params.items()]
        self.client.log_batch(run_id, params=items)  # the client splits it into batches

    @_guarded("logging metrics")
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=items)

    @_guarded("setting tags")
    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, schema.tag_value(v)) for k, v in tags.items()]
        self.client.log_batch(run_id, tags=items)

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
    def search_runs(self, filter_string: str, max_results: int = 1000) -> list[Run]:
        return list(
            self.client.search_runs(
                [self.experiment_id], filter_string=filter_string, max_results=max_results
            )
        )

    def ui_command(self) -> str:
        return ui_command(self.uri)

    # --- Reading runs back and the model registry (prediction, fus2net.inference) ---

    @_guarded("reading a run")
    def get_run(self, run_id: str) -> Run:
        return self.client.get_run(run_id)

    @_guarded("searching child runs")
    def child_runs(self, run_id: str) -> list[Run]:
        """The runs whose parent is `run_id` (a cell's folds), in the parent's experiment."""
        experiment = self.client.get_run(run_id).info.experiment_id
        query = f"tags.`{schema.PARENT}` = '{run_id}'"
        return list(self.client.search_runs([experiment], filter_string=query, max_results=1000))

    @_guarded("downloading artifacts")
    def download_artifacts(self, run_id: str, path: str, dst: Path) -> Path:
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(dst)))

    # Reading results back (fus2net-compare).

    @classmethod
    def open_existing(cls, uri: str, experiment: str) -> MlflowTracker:
        """An experiment that must already exist: a reader creates no store and no experiment."""
        return cls(uri, experiment, create=False)

    def _open_existing(self) -> None:
        from mlflow.tracking import MlflowClient

        require_existing_store(self.uri)
        try:
            self.uri = normalize_tracking_uri(self.uri, create=False)
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(self.experiment_name)
            names = sorted(e.name for e in self.client.search_experiments())
        except Exception as exc:
            raise TrackingError(
                f"MLflow tracking at {redact_uri(self.uri)} could not be read: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if found is None or found.lifecycle_stage == "deleted":
            raise TrackingError(
                f"experiment {self.experiment_name!r} not found in {redact_uri(self.uri)}; it "
                f"has: {', '.join(names) or 'no experiments'} (choose one with --experiment)"
            )
        self.experiment_id = found.experiment_id

    @_guarded("searching runs")
    def search_all_runs(
        self,
        filter_string: str = "",
        order_by: list[str] | None = None,
        max_results: int | None = None,
        page_size: int = 1000,
    ) -> list[Run]:
        """Every matching run of the experiment, page by page: one store call per page."""
        runs: list[Run] = []
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
    def artifact_file(self, run: Run, path: str, download_dir: Path) -> Path:
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
    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        return list(self.client.list_artifacts(run_id, path))
