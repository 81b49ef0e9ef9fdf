"""The clinical evaluation of a cell run, after its folds (called at the end of `_log_cell`).

Calibration per fold and on test (recalibrated by Platt or temperature scaling), operating
points, the Grad-CAM localisation score, external datasets, the model spec that prediction
loads, a model card, and optionally a registered model. Everything fitted here (calibration,
thresholds) sees validation (out-of-fold) predictions only; the test set and external datasets
only get scored.

Grad-CAM runs on at most `evaluation.gradcam.n_images` test images (balanced by class, those
with lesion masks first) with every fold model, averaging their maps: the same ensemble that
scores the test set, at a cost of n_images x folds backward passes (seconds on a CPU).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from fus2net.evaluation.calibration_step import CalibrationResult, calibrate_cell
from fus2net.evaluation.external import evaluate_external
from fus2net.evaluation.localization import (
    cam_energy_in_mask,
    localization_scores,
    pointing_game_hit,
    resized_mask,
)
from fus2net.evaluation.metrics import binary_metrics, mean_std
from fus2net.evaluation.operating_points import (
    OperatingPoint,
    choose_operating_points,
    operating_point_metrics,
)
from fus2net.evaluation.stats import bootstrap_intervals
from fus2net.inference.loading import LoadedModel, load_package
from fus2net.inference.spec import DEFAULT_POINT, Member, export_package, spec_from_config
from fus2net.reporting.clinical_plots import save_overlay_grid
from fus2net.reporting.model_card import ModelCardFacts, render_model_card
from fus2net.reporting.run_artifacts import patient_groups, write_json

if TYPE_CHECKING:
    from fus2net.tracking.mlflow_tracker import MlflowTracker
    from fus2net.training.fold import FoldResult
    from fus2net.training.job_data import JobData

log = logging.getLogger(__name__)
GRID_IMAGES = 16


@dataclass
class ClinicalReport:
    """What the step logged to the cell run (metrics by full name) and where its files are."""

    metrics: dict[str, float] = field(default_factory=dict)
    spec_file: Path | None = None
    model_card: Path | None = None
    registered_version: str | None = None


def _write_spec(
    cfg: DictConfig,
    data: JobData,
    results: dict[int, FoldResult],
    out: Path,
    calibration: CalibrationResult,
    points: list[OperatingPoint],
    cell_run: str,
) -> Path:
    """`fus2net_model.json` in the job's output folder, beside fold_<k>/model.pt."""
    if cfg.cv.test_scoring == "refit" and (out / "refit" / "model.pt").is_file():
        members = [Member("refit/model.pt", None)]
    else:
        members = [Member(_relative(r.weights, out), fold) for fold, r in sorted(results.items())]
    spec = spec_from_config(cfg, data.class_names, members)
    spec.temperature, spec.calibration_bias = calibration.temperature, calibration.bias
    spec.calibration_method = calibration.method
    spec.thresholds.update({p.name: p.threshold for p in points})
    spec.operating_point = points[0].name if points else DEFAULT_POINT
    spec.source = {
        "run_id": cell_run,
        "dataset": data.description.get("name"),
        "fingerprint": data.fingerprint,
        "test_scoring": str(cfg.cv.test_scoring),
        "thresholds_chosen_on": "out-of-fold validation predictions",
    }
    return spec.write(out)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(Path(path).resolve())


def _pick_images(data: JobData, n: int | None, seed: int) -> np.ndarray:
    """Up to n test images, classes interleaved, preferring those with lesion masks."""
    test = np.asarray(data.split.test)
    masked = np.array([i for i in test if data.records[i].masks], dtype=int)
    pool = masked if len(masked) else test
    rng = np.random.default_rng(seed)
    labels = data.cache.labels
    per_class = [rng.permutation(pool[labels[pool] == c]) for c in np.unique(labels[pool])]
    order = [i for group in itertools.zip_longest(*per_class) for i in group if i is not None]
    return np.array(order[:n] if n else order, dtype=int)


def _localization(
    cfg: DictConfig, data: JobData, model: LoadedModel, test_probs: pd.Series, out: Path
) -> tuple[dict[str, float], list[Path]]:
    """Grad-CAM of the picked test images: mean scores, a per-image table and a grid."""
    gradcam = cfg.evaluation.gradcam
    tolerance = int(gradcam.get("pointing_tolerance", 0))
    picked = _pick_images(data, gradcam.get("n_images"), int(cfg.seed))
    if len(picked) == 0:
        return {}, []
    images = np.asarray(data.cache.images[picked])
    cams = model.grad_cams(images, str(gradcam.get("target", "predicted")))
    masks = [resized_mask(data.records[i].masks, model.spec.image_size) for i in picked]
    paths = [str(data.records[i].image) for i in picked]
    table = pd.DataFrame(
        {
            "path": paths,
            "label": data.cache.labels[picked],
            "prob": [float(test_probs.get(p, np.nan)) for p in paths],
            "cam_energy_in_mask": [
                cam_energy_in_mask(c, m) if m.any() else np.nan
                for c, m in zip(cams, masks, strict=True)
            ],
            "pointing_hit": [
                float(pointing_game_hit(c, m, tolerance)) if m.any() else np.nan
                for c, m in zip(cams, masks, strict=True)
            ],
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "scores.csv", index=False)
    shown = table.head(GRID_IMAGES)
    titles = [
        f"{data.class_names[r.label]} p={r.prob:.2f}"
        + (
            f"\nE={r.cam_energy_in_mask:.2f} {'hit' if r.pointing_hit else 'miss'}"
            if np.isfinite(r.pointing_hit)
            else ""
        )
        for r in shown.itertuples()
    ]
    grid = save_overlay_grid(
        images[: len(shown)], cams[: len(shown)], titles, out / "gradcam_grid.png", masks
    )
    scores = localization_scores(cams, masks, tolerance)
    return {f"localization/{k}": v for k, v in scores.items()}, [out / "scores.csv", grid]


def _external(
    cfg: DictConfig,
    model: LoadedModel,
    points: list[OperatingPoint],
    tracker: MlflowTracker,
    cell_run: str,
    work: Path,
) -> dict[str, dict[str, float]]:
    """Score every `eval_datasets` entry; one that fails is logged and tagged, not fatal:
    a bad extra dataset must not lose the trained cell."""
    external = {}
    for name, dataset_cfg in (cfg.get("eval_datasets") or {}).items():
        try:
            result = evaluate_external(
                name,
                dataset_cfg,
                model,
                points,
                work / "external" / name,
                int(cfg.evaluation.calibration_bins),
            )
        except Exception as err:
            log.error("eval_datasets.%s could not be scored: %s", name, err)
            tracker.set_tags(cell_run, {f"fus2net.external.{name}.error": str(err)[:5000]})
            continue
        external[name] = result.metrics
        tracker.log_artifacts(cell_run, result.files, f"external/{name}")
    return external


def evaluate_clinically(
    cfg: DictConfig,
    data: JobData,
    results: dict[int, FoldResult],
    preds: pd.DataFrame,
    tracker: MlflowTracker,
    cell_run: str,
    out: Path,
) -> ClinicalReport:
    """Compute and log everything of the module doc to `cell_run` (and its fold runs)."""
    report = ClinicalReport()
    ev = cfg.get("evaluation")
    if ev is None or not ev.get("enabled", True):
        return report
    work = out / "clinical"
    work.mkdir(parents=True, exist_ok=True)
    oof, test = preds[preds.split == "oof"], preds[preds.split == "test"]
    test_y, test_p = test["label"].to_numpy(), test["prob"].to_numpy()

    refit_scored = cfg.cv.test_scoring == "refit" and (out / "refit" / "model.pt").is_file()
    test_members = (
        test_p[None]
        if refit_scored
        else np.stack([r.test_prob for _, r in sorted(results.items())])
    )
    n_bins = int(ev.calibration_bins)
    method = str(ev.get("calibration", "platt"))
    calibration = calibrate_cell(
        tracker,
        cell_run,
        oof,
        test,
        test_members,
        method,
        n_bins,
        work,  # type: ignore[arg-type]
    )
    try:
        points = choose_operating_points(oof.label, oof.prob, float(ev.target_sensitivity))
    except ValueError as err:
        log.warning("no operating points: %s", err)
        points = []
    operating = operating_point_metrics(points, test_y, test_p)

    report.spec_file = _write_spec(cfg, data, results, out, calibration, points, cell_run)
    tracker.log_artifacts(cell_run, [report.spec_file], "model")
    if refit_scored and cfg.tracking.get("log_checkpoints", True):
        tracker.log_artifacts(cell_run, [out / "refit" / "model.pt"], "checkpoint/refit")
    model = load_package(report.spec_file)

    localization: dict[str, float] = {}
    if ev.gradcam.get("enabled", True) and len(test):
        by_path = test.set_index("path")["prob"]
        localization, files = _localization(cfg, data, model, by_path, work / "localization")
        tracker.log_artifacts(cell_run, files, "localization")
    external = _external(cfg, model, points, tracker, cell_run, work)

    metrics = {f"calibration/{k}": v for k, v in calibration.metrics.items()}
    metrics.update(operating)
    metrics.update(localization)
    for name, values in external.items():
        metrics.update({f"external/{name}/{k}": v for k, v in values.items()})
    tracker.log_metrics(cell_run, {k: v for k, v in metrics.items() if np.isfinite(v)})
    report.metrics = metrics

    facts = ModelCardFacts(
        run_id=cell_run,
        spec=model.spec,
        dataset=data.description,
        split={
            "folds": len(data.split.folds),
            "n_train_pool": len(data.split.train_pool()),
            "n_test": len(test),
            "seed": int(cfg.seed),
            "test_scoring": str(cfg.cv.test_scoring),
        },
        cv=mean_std(binary_metrics(p.label, p.prob) for _, p in oof.groupby("fold")),
        test=binary_metrics(test_y, test_p) if len(test) else {},
        test_ci=(
            bootstrap_intervals(
                test_y, test_p, patient_groups(test), n_boot=int(ev.get("bootstrap", 1000))
            )
            if len(test)
            else {}
        ),
        calibration={**calibration.metrics, "bins": float(ev.calibration_bins)},
        operating=operating,
        localization={k.split("/", 1)[1]: v for k, v in localization.items()},
        external=external,
        provenance={"created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")},
        n_parameters=sum(p.numel() for p in model.members[0].parameters()),
    )
    report.model_card = work / "model_card.md"
    report.model_card.write_text(render_model_card(facts))
    summary = write_json(
        {
            "calibration": {"method": calibration.method, **calibration.metrics},
            "operating": operating,
            "localization": localization,
            "external": external,
        },
        work / "clinical.json",
    )
    tracker.log_artifacts(cell_run, [report.model_card, summary])

    if ev.get("register_model"):
        report.registered_version = _register(ev, report.spec_file, model, tracker, cell_run)
    return report


def _register(
    ev: DictConfig,
    spec_file: Path,
    model: LoadedModel,
    tracker: MlflowTracker,
    cell_run: str,
) -> str:
    """Register the packaged ensemble (pyfunc) as a new version of `evaluation.model_name`.

    The input example is a mid-grey image, not a patient's: the registry is often shared more
    widely than the data.
    """
    import tempfile

    from fus2net.inference import pyfunc

    size, chans = model.spec.image_size, model.spec.in_chans
    example = np.full((1, size, size, chans), 128, dtype=np.uint8)
    output = pyfunc.PyfuncModel(model).predict(example)
    name = str(ev.model_name)
    with tempfile.TemporaryDirectory(prefix="fus2net-package-") as tmp:
        package = Path(tmp) / "model_package"
        export_package(spec_file, package)
        version = tracker.register_model(
            cell_run,
            name,
            package,
            pyfunc.LOADER_MODULE,
            (example, output),
            pyfunc.pip_requirements(),
        )
    tracker.set_tags(cell_run, {"fus2net.registered_model": f"models:/{name}/{version}"})
    log.info("registered models:/%s/%s", name, version)
    return version
