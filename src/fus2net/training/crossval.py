"""One job = one cell: k-fold cross-validation, held-out test scoring, and its MLflow runs.

MLflow layout: one parent run per cell (one resolved configuration, folds aside) tagged with a
deterministic cell key and the sweep, and one child run per fold. Everything a comparison needs
(fold metrics, pooled out-of-fold and test predictions, splits, config) is logged there.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from fus2net.evaluation.clinical import evaluate_clinically
from fus2net.evaluation.metrics import METRICS, binary_metrics, mean_std
from fus2net.reporting.run_artifacts import (
    predictions_frame,
    split_metrics,
    write_json,
    write_prediction_artifacts,
)
from fus2net.tracking import resume
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.provenance import (
    cell_key,
    flatten,
    git_state,
    hydra_tags,
    package_versions,
    resolved_container,
)
from fus2net.training import cells
from fus2net.training.fold import FoldData, FoldResult, train_model
from fus2net.training.interrupts import JobInterrupted, stop_on_signals
from fus2net.training.job_data import JobData, prepare_data
from fus2net.training.preflight import check_config, check_tracking
from fus2net.training.stored_folds import load_fold_result

log = logging.getLogger(__name__)


@dataclass
class CellSummary:
    """What a job prints at the end and returns to Hydra (the sweep's objective for Optuna)."""

    cell_run_id: str
    cell_key: str
    folds: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    cv: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    ui_command: str = ""
    status: str = "FINISHED"  # or SCHEDULED (folds left to other jobs), FAILED, KILLED
    error: str = ""


def _output_dir(cfg: DictConfig) -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path(cfg.paths.root) / "outputs" / "adhoc"


def _provenance_files(cfg: DictConfig, data: JobData, out: Path) -> list[Path]:
    config = out / "config.yaml"
    config.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved_container(cfg))))
    files = [
        config,
        write_json(data.description, out / "dataset.json"),
        write_json(package_versions(), out / "environment.json"),
    ]
    if data.split.path is not None and Path(data.split.path).exists():
        files.append(Path(shutil.copyfile(data.split.path, out / "split.json")))
    return files


def _frame(
    data: JobData, idx: np.ndarray, probs: np.ndarray, fold: int | str, split: str
) -> pd.DataFrame:
    """Predictions of the records `idx`, with their paths, labels and patient groups."""
    records = [data.records[i] for i in idx]
    return predictions_frame(
        [str(r.image) for r in records],
        data.cache.labels[idx],
        probs,
        fold,
        split,
        groups=[r.group for r in records],
    )


def run_fold(
    cfg: DictConfig,
    data: JobData,
    fold: int,
    tracker: MlflowTracker,
    cell_run: str,
    tags: dict[str, str],
    params: dict[str, Any],
    out: Path,
    previous: Any = None,
) -> tuple[FoldResult, dict]:
    """Train fold `fold` in its own child run; returns its predictions and metrics.

    `previous` is an unfinished attempt of the fold (a KILLED or FAILED run): that run is
    reopened and training resumes from the fold's last checkpoint, when there is one.
    """
    train_idx, val_idx = data.split.fold(fold)
    fold_tags = {**tags, "fus2net.role": "fold", "fus2net.fold": str(fold)}
    if previous is None:
        run_id = tracker.start_run(
            f"fold-{fold}", {**fold_tags, **resume.owner_tags()}, parent_id=cell_run
        )
        logged: dict[str, str] = {}
    else:
        run_id, logged = previous.info.run_id, previous.data.params
        cells.reopen(tracker, previous, {**fold_tags, "fus2net.resumed_from": previous.info.status})
    with resume.working_on(run_id):
        try:
            fold_params = {**params, "fold": fold, "n_train": len(train_idx), "n_val": len(val_idx)}
            tracker.log_params(run_id, {k: v for k, v in fold_params.items() if k not in logged})
            fold_dir = out / f"fold_{fold}"
            fold_dir.mkdir(parents=True, exist_ok=True)
            log.info(
                "fold %d/%d: %d training, %d validation, %d test images",
                fold + 1,
                len(data.split.folds),
                len(train_idx),
                len(val_idx),
                len(data.split.test),
            )
            checkpoints = cells.checkpoint_dir(cfg, tags["fus2net.cell_key"], fold)
            result = train_model(
                cfg,
                FoldData(data.cache.images, data.cache.labels, train_idx, val_idx, data.split.test),
                seed=int(cfg.seed) + fold,
                num_classes=len(data.class_names),
                out_dir=fold_dir,
                logger=tracker.lightning_logger(run_id),
                checkpoint_dir=checkpoints,
                resume=previous is not None,
                callbacks=[resume.Heartbeat(tracker, [run_id])],  # only fold runs are ever reaped
            )
            if result.start_epoch:
                tracker.set_tags(run_id, {"fus2net.resumed_from_epoch": result.start_epoch})
            preds = pd.concat(
                [
                    _frame(data, result.val_index, result.val_prob, fold, "val"),
                    _frame(data, data.split.test, result.test_prob, fold, "test"),
                ],
                ignore_index=True,
            )
            metrics = split_metrics(preds)
            flat = {f"fold/{sp}_{name}": v for sp, m in metrics.items() for name, v in m.items()}
            tracker.log_metrics(run_id, {k: v for k, v in flat.items() if np.isfinite(v)})
            files = write_prediction_artifacts(
                preds, fold_dir / "report", data.class_names, f"fold {fold}"
            )
            files.append(write_json(metrics, fold_dir / "report" / "metrics.json"))
            tracker.log_artifacts(run_id, files)
            tracker.log_artifacts(run_id, _provenance_files(cfg, data, fold_dir), "provenance")
            if cfg.tracking.get("log_checkpoints", True):
                tracker.log_artifacts(run_id, [result.weights], "checkpoint")
            tracker.end_run(run_id, "FINISHED")
            shutil.rmtree(checkpoints, ignore_errors=True)  # the store has it all now
            return result, metrics
        except BaseException as exc:
            _safe_end(tracker, run_id, _end_status(exc), exc)
            raise


def _end_status(exc: BaseException) -> str:
    """KILLED when the job was stopped from outside (a signal, or submitit's requeue exit)."""
    stopped = isinstance(exc, KeyboardInterrupt | JobInterrupted | SystemExit)
    return "KILLED" if stopped else "FAILED"


def _safe_end(tracker: MlflowTracker, run_id: str, status: str, exc: BaseException) -> None:
    """Mark a run FAILED/KILLED with the reason, without hiding the original error."""
    try:
        tracker.set_tags(run_id, {"fus2net.error": f"{type(exc).__name__}: {exc}"[:5000]})
        tracker.end_run(run_id, status)
    except Exception:  # the store itself may be what failed
        log.exception("could not mark MLflow run %s as %s", run_id, status)


def run_job(cfg: DictConfig) -> CellSummary:
    """Check, then train the folds of the cell (or `cv.fold`) the tracking store lacks, score
    the test set once every fold is done, and log it all.

    A re-run finds the cell by its key: finished folds are skipped, an interrupted fold resumes
    from its last checkpoint, a finished cell is not trained again (fus2net.training.cells). A
    diverged fold (non-finite loss) fails alone; the other folds and jobs go on.
    """
    check_config(cfg)
    check_tracking(str(cfg.tracking.uri))  # before anything is prepared or written
    torch.set_num_threads(int(cfg.trainer.threads or os.cpu_count() or 1))
    with stop_on_signals():
        data = prepare_data(cfg)
        tracker = MlflowTracker(
            cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.get("artifact_location")
        )
        out = _output_dir(cfg)
        out.mkdir(parents=True, exist_ok=True)
        key = cell_key(cfg, data.fingerprint)
        tags = {
            "fus2net.cell_key": key,
            "fus2net.dataset_fingerprint": data.fingerprint,
            "fus2net.dataset": data.description.get("name", ""),
            **hydra_tags(cfg.tracking.sweep),
            **git_state(),
        }
        params = flatten(resolved_container(cfg))
        params.update(
            {"dataset.fingerprint": data.fingerprint, "dataset.n_images": len(data.records)}
        )
        n_folds = len(data.split.folds)
        folds = [int(cfg.cv.fold)] if cfg.cv.fold is not None else list(range(n_folds))
        name = cells.cell_name(tags)
        stale = float(cfg.tracking.get("stale_after_s") or resume.STALE_AFTER_S)
        cell = cells.open_cell(
            tracker,
            key,
            name,
            {**tags, "fus2net.role": "cell", "fus2net.folds_run": ",".join(map(str, folds))},
            {**params, "cv.fold": None},  # the cell is all folds, whichever this job runs
            n_folds,
            stale,
        )
        summary = CellSummary(cell.run_id, key, ui_command=tracker.ui_command())
        if cell.finished:
            cells.stored_summary(cell, summary)
            return summary
        with resume.working_on(cell.run_id):
            try:
                _train_cell(cfg, data, tracker, cell, folds, tags, params, out, summary, stale)
            except BaseException as exc:
                _safe_end(tracker, cell.run_id, _end_status(exc), exc)
                raise
    return summary


def _train_cell(
    cfg: DictConfig,
    data: JobData,
    tracker: MlflowTracker,
    cell: cells.OpenCell,
    folds: list[int],
    tags: dict[str, str],
    params: dict[str, Any],
    out: Path,
    summary: CellSummary,
    stale: float,
) -> None:
    """Train the folds of `folds` the store lacks, then let `cells.finish_cell` close the cell."""
    if data.skipped:
        skipped = out / "skipped_images.csv"
        pd.DataFrame([vars(p) for p in data.skipped]).to_csv(skipped, index=False)
        tracker.log_artifacts(cell.run_id, [skipped])
    results: dict[int, FoldResult] = {}
    for fold in folds:
        previous = cell.folds.get(fold)
        status = previous.info.status if previous is not None else None
        if status == "FINISHED":
            log.info("fold %d: finished in run %s, not trained again", fold, previous.info.run_id)
            continue
        if status == "RUNNING":
            owner = previous.data.tags
            log.warning(
                "fold %d: being trained by process %s on %s (run %s); left to it",
                fold,
                owner.get(resume.PID_TAG),
                owner.get(resume.HOST_TAG),
                previous.info.run_id,
            )
            continue
        try:
            results[fold], summary.folds[fold] = run_fold(
                cfg, data, fold, tracker, cell.run_id, tags, params, out, previous
            )
        except FloatingPointError as exc:  # diverged: this fold fails, the others go on
            log.error("fold %d failed: %s", fold, exc)

    def load(fold: int, run: Any) -> tuple[FoldResult, dict]:
        return load_fold_result(tracker, run, data.records, data.split.test, out / f"fold_{fold}")

    def score(all_results: dict[int, FoldResult]) -> None:
        whole = OmegaConf.merge(cfg, {"cv": {"fold": None}})  # the cell, not one fold job
        _log_cell(whole, data, tracker, cell.run_id, all_results, summary, out)

    cells.finish_cell(
        tracker, summary, len(data.split.folds), results, load, score, stale_after_s=stale
    )


def _log_cell(
    cfg: DictConfig,
    data: JobData,
    tracker: MlflowTracker,
    cell_run: str,
    results: dict[int, FoldResult],
    summary: CellSummary,
    out: Path,
) -> None:
    """Fold means and standard deviations, pooled out-of-fold and test-set predictions."""
    labels = data.cache.labels
    test_idx = data.split.test
    if cfg.cv.test_scoring == "refit" and cfg.cv.fold is None:
        log.info("refit on all %d training images for the test set", len(data.split.train_pool()))
        refit = train_model(
            cfg,
            FoldData(
                data.cache.images, labels, data.split.train_pool(), np.zeros(0, dtype=int), test_idx
            ),
            seed=int(cfg.seed) + 1000,
            num_classes=len(data.class_names),
            out_dir=out / "refit",
        )
        test_prob = refit.test_prob
    else:
        test_prob = np.mean([r.test_prob for r in results.values()], axis=0)
    frames = [_frame(data, r.val_index, r.val_prob, f, "oof") for f, r in results.items()]
    frames.append(_frame(data, test_idx, test_prob, str(cfg.cv.test_scoring), "test"))
    preds = pd.concat(frames, ignore_index=True)
    summary.cv = mean_std(m["val"] for m in summary.folds.values() if "val" in m)
    summary.test = binary_metrics(labels[test_idx], test_prob)
    oof = preds[preds.split == "oof"]
    pooled = binary_metrics(oof["label"].to_numpy(), oof["prob"].to_numpy())
    metrics = {f"cv/{k}": v for k, v in summary.cv.items()}
    metrics.update({f"test/{k}": v for k, v in summary.test.items()})
    metrics.update({f"oof/{k}": v for k, v in pooled.items()})
    metrics["cv/folds_completed"] = len(results)
    tracker.log_metrics(cell_run, {k: v for k, v in metrics.items() if np.isfinite(v)})
    report = out / "report"
    files = write_prediction_artifacts(preds, report, data.class_names, "cell")
    files.append(
        write_json(
            {"folds": summary.folds, "cv": summary.cv, "test": summary.test, "oof": pooled},
            report / "results.json",
        )
    )
    tracker.log_artifacts(cell_run, files)
    tracker.log_artifacts(cell_run, _provenance_files(cfg, data, out), "provenance")
    evaluate_clinically(cfg, data, results, preds, tracker, cell_run, out)


def format_summary(summary: CellSummary) -> str:
    """The table printed at the end of a job."""
    header = f"{'':>10}" + "".join(f"{m:>13}" for m in METRICS)
    lines = ["", "Validation metrics per fold (malignant = positive)", header]
    for fold, metrics in summary.folds.items():
        val = metrics.get("val", {})
        lines.append(
            f"{'fold ' + str(fold):>10}" + "".join(f"{val.get(m, np.nan):>13.4f}" for m in METRICS)
        )
    if summary.cv:
        lines.append(
            f"{'mean+-sd':>10}"
            + "".join(
                f"{summary.cv.get(m + '_mean', np.nan):>7.4f}"
                f"+-{summary.cv.get(m + '_std', 0):<4.2f}"
                for m in METRICS
            )
        )
    if summary.test:
        lines.append(f"{'test':>10}" + "".join(f"{summary.test[m]:>13.4f}" for m in METRICS))
    lines += [
        "",
        f"MLflow cell run: {summary.cell_run_id} (cell key {summary.cell_key})",
        f"Browse the results: {summary.ui_command}",
    ]
    return "\n".join(lines)
