"""The one place that talks to MLflow's tracking store: runs, params, metrics, artifacts, dataset
inputs, logged models, system metrics and registered versions.

Every call goes through `MlflowClient` with explicit run and model ids (no fluent global
state), so that folds, cells and sweeps never log into each other's runs. Any tracking failure
raises `TrackingError` naming the store and what was being logged: a run is never lost silently.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse
from urllib.request import url2pathname

from fus2net.tracking import schema
from fus2net.tracking.store_lock import store_open_lock
from fus2net.tracking.store_open import open_when_ready
from fus2net.tracking.uris import (
    TrackingError,
    normalize_tracking_uri,
    redact_uri,
    require_existing_store,
    runs_table_link,
    ui_command,
)

if TYPE_CHECKING:
    from mlflow.entities import Experiment, FileInfo, LoggedModel, Run

log = logging.getLogger(__name__)

MAX_PARAM_VALUE = 6000
DUPLICATE_RETRIES = 3
_DUPLICATE_KEY = ("duplicate key", "UniqueViolation", "UNIQUE constraint failed", "IntegrityError")
T = TypeVar("T")


def _is_duplicate_key(exc: BaseException) -> bool:
    """Whether `exc` is a store refusing a row that another writer inserted first."""
    return any(marker in str(exc) for marker in _DUPLICATE_KEY)


def _advice(exc: BaseException) -> str:
    """What to do about `exc`: MLflow refusing a value is not the store being unreachable."""
    if getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE":
        return (
            "MLflow refused what was logged (its reason is above): a name or value it does not "
            "accept, not a problem of the store; please report it with the command you ran."
        )
    return (
        "Check that the tracking store is reachable and writable (tracking.uri), then run the "
        "same command again."
    )


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
                    f"silently. {_advice(exc)}"
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
        wait_s: float | None = None,
    ) -> None:
        """Open `experiment` in the store at `uri`; with `create` (a job), create or restore
        it, waiting up to `wait_s` (default `FUS2NET_STORE_WAIT_S`, 60 s) for another client
        creating a local store; without (a reader), it must exist and nothing is written."""
        self.uri = uri
        self.wait_s = wait_s
        self.experiment_name = experiment
        if create:
            self._connect(artifact_location)
        else:
            self._open_existing()

    @_guarded("opening the experiment")
    def _connect(self, artifact_location: str | None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = normalize_tracking_uri(self.uri)

        def open_store() -> Experiment | None:
            with store_open_lock(self.uri):  # a fresh SQLite store is migrated by one job only
                self.client = MlflowClient(tracking_uri=self.uri)
                return self.client.get_experiment_by_name(self.experiment_name)

        # ... and not while another MLflow client (`mlflow ui`, a script) is creating it.
        found = open_when_ready(self.uri, open_store, bound_s=self.wait_s)
        if found is None:
            location = None
            if artifact_location:
                folder = Path(artifact_location).resolve()
                folder.mkdir(parents=True, exist_ok=True)
                location = folder.as_uri()
            kind = {schema.EXPERIMENT_KIND: schema.EXPERIMENT_KIND_TRAINING}
            try:
                self.experiment_id = self.client.create_experiment(
                    self.experiment_name, artifact_location=location, tags=kind
                )
                return
            except Exception:
                # Parallel jobs of one sweep may create the experiment at the same moment:
                # the one that lost the race uses the winner's experiment.
                found = self.client.get_experiment_by_name(self.experiment_name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        self.experiment_id = found.experiment_id
        if schema.EXPERIMENT_KIND not in found.tags:  # a kind chosen in the UI is kept
            self.client.set_experiment_tag(
                self.experiment_id, schema.EXPERIMENT_KIND, schema.EXPERIMENT_KIND_TRAINING
            )

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

        items = [Param(k, redact_uri(str(v))[:MAX_PARAM_VALUE]) for k, v in params.items()]
        self.client.log_batch(run_id, params=items)  # the client splits it into batches

    @_guarded("logging metrics")
    def log_metrics(
        self,
        run_id: str,
        metrics: Mapping[str, float],
        step: int = 0,
        *,
        model_id: str | None = None,
        dataset: schema.ImageSet | None = None,
    ) -> None:
        """Log `metrics` at `step`; with `model_id` and `dataset`, also as that logged model's
        metrics on that dataset input (what the Models tab shows)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        name, digest = (dataset.name, dataset.digest) if dataset else (None, None)
        items = [
            Metric(
                k,
                float(v),
                now,
                step,
                model_id=model_id,
                dataset_name=name,
                dataset_digest=digest,
            )
            for k, v in metrics.items()
        ]
        self.client.log_batch(run_id, metrics=items)

    @_guarded("logging dataset inputs")
    def log_datasets(self, run_id: str, sets: Iterable[schema.ImageSet]) -> None:
        """The image sets `run_id` used, as MLflow dataset inputs (the run's Datasets panel):
        source = the dataset folder, schema = the records' columns, profile = counts per
        class, context tag = train / validation / test / external. Logging one again is a no-op.
        """
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.types import ColSpec, Schema

        columns = Schema(
            [
                ColSpec("string", "path"),
                ColSpec("long", "label"),
                ColSpec("string", schema.GROUP_COLUMN, required=False),
            ]
        )
        inputs = []
        for item in sets:
            with warnings.catch_warnings():  # two equal local sources are registered in MLflow
                warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways")
                source = resolve_dataset_source(redact_uri(item.source))
            meta = MetaDataset(source, name=item.name, digest=item.digest, schema=columns)
            entity = meta.to_dict()
            dataset = Dataset(
                name=entity["name"],
                digest=entity["digest"],
                source_type=entity["source_type"],
                source=entity["source"],
                schema=entity.get("schema"),
                profile=item.profile,
            )
            tags = [InputTag(schema.DATASET_CONTEXT, item.context.value)]
            inputs.append(DatasetInput(dataset, tags))
        for attempt in range(DUPLICATE_RETRIES + 1) if inputs else ():
            try:
                self.client.log_inputs(run_id, datasets=inputs)
                return
            except Exception as exc:
                # Two jobs logging one dataset at the same moment (a parallel sweep): the store
                # refuses the second insert on its unique key; tried again, it finds the first
                # job's row and only links it to this run.
                if attempt == DUPLICATE_RETRIES or not _is_duplicate_key(exc):
                    raise
                time.sleep(0.2 * (attempt + 1))

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

    def runs_table_link(self) -> str:
        return runs_table_link(self.uri, self.experiment_id)

    @contextlib.contextmanager
    def system_metrics(
        self, run_id: str, interval_s: float, *, resume: bool = False
    ) -> Iterator[None]:
        """MLflow's system metrics (`system/*`: CPU, memory, disk, network, GPU) of `run_id`
        while the block runs, sampled every `interval_s` by MLflow's own monitor thread;
        `resume` continues the steps of an earlier attempt. Without psutil, nothing is logged."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(
                run_id,
                sampling_interval=interval_s,
                resume_logging=resume,
                tracking_uri=self.uri,
            )
        except ImportError as exc:  # psutil is missing
            log.warning("no system metrics for run %s: %s", run_id, exc)
            yield
            return
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()

    # --- Logged models (the Models tab) and registered versions ---

    @_guarded("creating a logged model")
    def create_model(
        self, name: str, run_id: str, tags: Mapping[str, str], params: Mapping[str, Any]
    ) -> str:
        """A logged model (PENDING) of run `run_id`, listed among the run's outputs."""
        from mlflow.entities import LoggedModelOutput

        model = self.client.create_logged_model(
            self.experiment_id,
            name=name,
            source_run_id=run_id,
            tags={k: schema.tag_value(v) for k, v in tags.items()},
            params={k: str(v)[:MAX_PARAM_VALUE] for k, v in params.items()},
            model_type=schema.MODEL_TYPE,
        )
        self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        return model.model_id

    @_guarded("uploading a logged model's files")
    def log_model_files(self, model_id: str, paths: Iterable[Path]) -> None:
        for path in paths:
            self.client.log_model_artifact(model_id, str(path))

    @_guarded("finalizing a logged model")
    def finalize_model(self, model_id: str, ok: bool = True) -> None:
        self.client.finalize_logged_model(model_id, "READY" if ok else "FAILED")

    @_guarded("searching logged models")
    def find_models(self, filter_string: str) -> list[LoggedModel]:
        """The experiment's logged models matching `filter_string`, newest first."""
        order = [{"field_name": "creation_timestamp", "ascending": False}]
        return list(
            self.client.search_logged_models(
                [self.experiment_id], filter_string=filter_string, order_by=order
            )
        )

    @_guarded("listing a logged model's files")
    def model_files(self, model_id: str) -> dict[str, int | None]:
        """Every file of logged model `model_id`, in all its folders, and its size in bytes
        (None where the artifact store does not say)."""
        found: dict[str, int | None] = {}
        folders: list[str | None] = [None]
        while folders:
            for info in self.client.list_logged_model_artifacts(model_id, folders.pop()):
                if info.is_dir:
                    folders.append(info.path)
                else:
                    found[info.path] = info.file_size
        return found

    @_guarded("downloading a logged model's file")
    def download_model_file(self, model_id: str, path: str, dst: Path) -> Path:
        """File `path` of logged model `model_id`, downloaded into `dst`."""
        from mlflow.artifacts import download_artifacts

        location = self.client.get_logged_model(model_id).artifact_location.rstrip("/")
        dst.mkdir(parents=True, exist_ok=True)
        uri = f"{location}/{path}"
        return Path(download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=self.uri))

    @_guarded("registering a model version")
    def register_version(
        self,
        name: str,
        model_id: str,
        run_id: str,
        description: str,
        tags: Mapping[str, str],
    ) -> str:
        """A new version of registered model `name` (created if need be) from logged model
        `model_id` of run `run_id`, with its description and tags; returns the version."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import (
            ALREADY_EXISTS,
            RESOURCE_ALREADY_EXISTS,
            ErrorCode,
        )

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:  # a later version of a registered model
            if exc.error_code not in (
                ErrorCode.Name(RESOURCE_ALREADY_EXISTS),
                ErrorCode.Name(ALREADY_EXISTS),
            ):
                raise
        version = self.client.create_model_version(
            name,
            source=f"models:/{model_id}",
            run_id=run_id,
            tags={k: schema.tag_value(v) for k, v in tags.items()},
            description=description,
            model_id=model_id,
        )
        return str(version.version)

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

    @classmethod
    def open_store(cls, uri: str) -> MlflowTracker:
        """A store that must already exist, read by run id only: run ids are global, so a run
        is found in whichever experiment holds it (no experiment is looked up or searched)."""
        return cls(uri, "", create=False)

    @_guarded("reading a run")
    def find_run(self, run_id: str) -> Run | None:
        """The run with this id in any experiment of the store, None when there is none."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _open_existing(self) -> None:
        from mlflow.tracking import MlflowClient

        require_existing_store(self.uri)
        try:
            self.uri = normalize_tracking_uri(self.uri, create=False)
            self.client = MlflowClient(tracking_uri=self.uri)
            if not self.experiment_name:  # open_store: the store alone
                self.experiment_id = ""
                return
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
