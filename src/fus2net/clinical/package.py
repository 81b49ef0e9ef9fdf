"""The cell's model package: the spec prediction loads (`fus2net_model.json`), and its
registration in the MLflow model registry (`evaluation.register_model`)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from fus2net.cell.context import JobContext
from fus2net.cell.scoring import ensemble_model
from fus2net.clinical.recalibration import CalibrationResult
from fus2net.clinical.train_images import training_data
from fus2net.config.factories import model_spec
from fus2net.evaluation.operating_points import OperatingPoint
from fus2net.evaluation.stats import bootstrap_intervals
from fus2net.inference import pyfunc
from fus2net.inference.loading import LoadedModel, load_from_run
from fus2net.inference.model_registry import PyfuncPackage, is_packaged, register_package
from fus2net.inference.spec import (
    DEFAULT_POINT,
    SPEC_FILE,
    Member,
    export_package,
)
from fus2net.tracking import schema
from fus2net.tracking.predictions import patient_groups, read_cell_predictions
from fus2net.training.fold import FoldResult

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)

HEADLINE = ("auc", "sensitivity", "specificity", "accuracy")  # a registered version's tags


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(Path(path).resolve())


def write_spec(
    ctx: JobContext,
    cell_run: str,
    results: dict[int, FoldResult],
    refit_weights: Path | None,
    calibration: CalibrationResult,
    points: list[OperatingPoint],
) -> Path:
    """`fus2net_model.json` in the job's output folder, beside fold_<k>/model.pt."""
    if refit_weights is not None and refit_weights.is_file():
        members = [Member(_relative(refit_weights, ctx.out), None)]
    else:
        members = [Member(_relative(r.weights, ctx.out), fold) for fold, r in results.items()]
    spec = model_spec(ctx.cfg, ctx.data.class_names, members)
    spec.temperature, spec.calibration_bias = calibration.temperature, calibration.bias
    spec.calibration_method = calibration.method
    spec.thresholds.update({p.name: p.threshold for p in points})
    spec.operating_point = points[0].name if points else DEFAULT_POINT
    spec.source = {
        "run_id": cell_run,
        "dataset": ctx.data.description.get("name"),
        "fingerprint": ctx.data.fingerprint,
        "test_scoring": str(ctx.cfg.cv.test_scoring),
        "thresholds_chosen_on": "out-of-fold validation predictions",
        **training_data(ctx),  # what prediction prints and checks new images against
    }
    return spec.write(ctx.out)


def register(ctx: JobContext, cell_run: str, spec_file: Path, model: LoadedModel) -> str:
    """Register the cell's ensemble as a new version of `evaluation.model_name`: packaged
    (pyfunc: weights, spec, signature) into the cell's ensemble logged model, described by its
    headline test metrics with bootstrap CIs, the dataset and the commit.

    The input example is one mid-grey PNG's bytes in the `image` column (what `mlflow models
    serve` takes as a base64 string), not a patient's: the registry is often shared more
    widely than the data.
    """
    example = pd.DataFrame({pyfunc.IMAGE_COLUMN: [pyfunc.example_image(model.spec.image_size)]})
    output = pyfunc.PyfuncModel(model).predict(example)
    with tempfile.TemporaryDirectory(prefix="fus2net-package-") as tmp:
        package = Path(tmp) / "model_package"
        export_package(spec_file, package)
        return _register(ctx, cell_run, package, (example, output))


def register_stored(ctx: JobContext, cell_run: str) -> str | None:
    """Register a finished cell's ensemble without training (`evaluation.register_model=true`
    on a re-run): its logged model again when it holds a complete package (`is_packaged`), else
    packaged from the cell's runs first (`load_from_run`), over what an interrupted packaging
    left. None, with the reason logged, when the cell has no model spec (trained with
    `evaluation.enabled=false`)."""
    model_id = ensemble_model(ctx, cell_run)
    if is_packaged(ctx.tracker, model_id):
        return _register(ctx, cell_run, None, None)
    with tempfile.TemporaryDirectory(prefix="fus2net-stored-") as tmp:
        try:
            model = load_from_run(ctx.tracker, cell_run, Path(tmp))
        except ValueError as err:
            log.warning("cell run %s: nothing registered: %s", cell_run, err)
            return None
        return register(ctx, cell_run, Path(tmp) / SPEC_FILE, model)


def _register(
    ctx: JobContext,
    cell_run: str,
    package: Path | None,
    examples: tuple[Any, Any] | None,
) -> str:
    tracker, name = ctx.tracker, str(ctx.cfg.evaluation.model_name)
    model_id = ensemble_model(ctx, cell_run)
    description, tags = _headline(ctx, tracker.get_run(cell_run))
    pyfunc_package = None
    if package is not None and examples is not None:
        pyfunc_package = PyfuncPackage(
            package,
            pyfunc.LOADER_MODULE,
            examples,
            pyfunc.pip_requirements(),
            {"operating_point": ""},  # "": the model's own; sens95, youden, default or 0..1
        )
    version = register_package(
        tracker, model_id, cell_run, name, pyfunc_package, description=description, tags=tags
    )
    tracker.set_tags(cell_run, {schema.REGISTERED_MODEL: f"models:/{name}/{version}"})
    log.info("registered models:/%s/%s", name, version)
    return version


def _headline(ctx: JobContext, cell: Run) -> tuple[str, dict[str, str]]:
    """A version's description and tags: test metrics with 95 % bootstrap CIs (as the model
    card computes them, from the cell's logged test predictions), the dataset and the commit."""
    with tempfile.TemporaryDirectory(prefix="fus2net-preds-") as tmp:
        path = ctx.tracker.artifact_file(cell, schema.PREDICTIONS_FILE, Path(tmp))
        preds = read_cell_predictions(path, cell.info.run_id)
    test = preds[preds["split"] == schema.Split.TEST]
    labels, probs = test["label"].to_numpy(), test["prob"].to_numpy()
    n_boot = int(ctx.cfg.evaluation.bootstrap)
    metrics = schema.unprefixed(schema.TEST, cell.data.metrics)
    headline = {m: metrics[m] for m in HEADLINE if m in metrics}
    intervals = (
        bootstrap_intervals(labels, probs, patient_groups(test), n_boot=n_boot) if len(test) else {}
    )
    dataset, fingerprint = ctx.data.description.get("name", ""), ctx.data.fingerprint
    commit = cell.data.tags.get(schema.GIT_COMMIT, "unknown")
    provenance = {
        schema.DATASET: str(dataset),
        schema.DATASET_FINGERPRINT: fingerprint,
        schema.GIT_COMMIT: commit,
        schema.CELL_KEY: ctx.key,
    }
    shown = "; ".join(
        f"{m} {v:.3f} [{intervals[m][0]:.3f}, {intervals[m][1]:.3f}]"
        for m, v in headline.items()
        if m in intervals
    )
    scoring = str(ctx.cfg.cv.test_scoring)
    description = (
        f"{ctx.cfg.model.name} ({scoring} of {ctx.n_folds} folds) from cell run "
        f"{cell.info.run_id} ({cell.info.run_name}). Held-out test set of {len(test)} images, "
        f"95 % bootstrap CIs ({n_boot} resamples): {shown}. Dataset {dataset} (fingerprint "
        f"{fingerprint[:16]}), commit {commit[:12]}. Research model, not a medical device."
    )
    return description, schema.version_tags(headline, intervals, provenance)
