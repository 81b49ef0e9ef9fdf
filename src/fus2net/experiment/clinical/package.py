"""The cell's model package: the spec prediction loads (`fus2net_model.json`), and its
registration in the MLflow model registry (`evaluation.register_model`)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from fus2net.evaluation.operating_points import OperatingPoint
from fus2net.experiment.clinical.calibration import CalibrationResult
from fus2net.experiment.context import JobContext
from fus2net.inference import pyfunc
from fus2net.inference.loading import LoadedModel
from fus2net.inference.registry import register_package
from fus2net.inference.spec import DEFAULT_POINT, Member, export_package, spec_from_config
from fus2net.tracking import schema
from fus2net.training.fold import FoldResult

log = logging.getLogger(__name__)


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
    spec = spec_from_config(ctx.cfg, ctx.data.class_names, members)
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
    }
    return spec.write(ctx.out)


def register(ctx: JobContext, cell_run: str, spec_file: Path, model: LoadedModel) -> str:
    """Register the packaged ensemble (pyfunc) as a new version of `evaluation.model_name`.

    The input example is a mid-grey image, not a patient's: the registry is often shared more
    widely than the data.
    """
    size, chans = model.spec.image_size, model.spec.in_chans
    example = np.full((1, size, size, chans), 128, dtype=np.uint8)
    output = pyfunc.PyfuncModel(model).predict(example)
    name = str(ctx.cfg.evaluation.model_name)
    with tempfile.TemporaryDirectory(prefix="fus2net-package-") as tmp:
        package = Path(tmp) / "model_package"
        export_package(spec_file, package)
        version = register_package(
            ctx.tracker,
            cell_run,
            name,
            package,
            pyfunc.LOADER_MODULE,
            (example, output),
            pyfunc.pip_requirements(),
        )
    ctx.tracker.set_tags(cell_run, {schema.REGISTERED_MODEL: f"models:/{name}/{version}"})
    log.info("registered models:/%s/%s", name, version)
    return version
