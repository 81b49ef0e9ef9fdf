"""What a job prints at the end and returns to Hydra (the sweep's objective for Optuna)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fus2net.evaluation.metrics import METRICS
from fus2net.tracking import schema

FoldMetrics = dict[str, dict[str, float]]  # split (val, test) -> metric -> value


@dataclass
class CellSummary:
    """The cell's fold metrics, cross-validation mean and sd, test metrics, and its status."""

    cell_run_id: str
    cell_key: str
    folds: dict[int, FoldMetrics] = field(default_factory=dict)
    cv: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    test_auc_ci: tuple[float, float] | None = None  # 95 % bootstrap CI, as the model card's
    n_test: int = 0
    ui_command: str = ""
    ui_link: str = ""  # the experiment's runs table, in model-training mode
    n_folds: int = 0
    status: str = "FINISHED"  # or SCHEDULED (folds left to other jobs), FAILED, KILLED
    error: str = ""


def stored_summary(
    summary: CellSummary, cell_metrics: dict[str, float], folds: dict[int, schema.FoldRun]
) -> CellSummary:
    """`summary` filled from a finished cell's logged metrics (nothing was trained)."""
    for fold, run in folds.items():
        summary.folds[fold] = {sp: run.metrics(sp) for sp in (schema.Split.VAL, schema.Split.TEST)}
    summary.cv = schema.unprefixed(schema.CV, cell_metrics)
    summary.cv.pop(schema.FOLDS_COMPLETED.split("/", 1)[1], None)
    summary.test = schema.unprefixed(schema.TEST, cell_metrics)
    return summary


@dataclass
class Closing:
    """What a job's closing block says besides its cell: where its files are, what to run next
    and how long it took (filled by the command that ran it, fus2net.cli.train)."""

    output_dir: Path | None = None
    elapsed_s: float | None = None
    model_card: Path | None = None
    predict: str = ""  # the command that predicts with the cell
    compare: str = ""  # after a sweep: the command that compares its cells


COLUMN = 17  # `0.8050 ± 0.0381` and two spaces
LABEL = 10  # `mean ± sd`, `fold 10/10`


def _value(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4f}"


def _row(label: str, cells: list[str]) -> str:
    return (f"{label:>{LABEL}}  " + "".join(f"{c:<{COLUMN}}" for c in cells)).rstrip()


def format_duration(seconds: float) -> str:
    """`42 s`, `6 min 05 s`, `2 h 03 min`."""
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_table(summary: CellSummary) -> list[str]:
    """Each fold's validation metrics, their mean ± sd and the test set's, in aligned columns."""
    lines = ["Validation metrics per fold (malignant = positive)", _row("", list(METRICS))]
    n_folds = summary.n_folds or len(summary.folds)
    for fold, metrics in summary.folds.items():
        val = metrics.get("val", {})
        lines.append(_row(schema.fold_label(fold, n_folds), [_value(val.get(m)) for m in METRICS]))
    if summary.cv:
        cv = summary.cv
        lines.append(
            _row(
                "mean ± sd",
                [f"{_value(cv.get(m + '_mean'))} ± {_value(cv.get(m + '_std'))}" for m in METRICS],
            )
        )
    if summary.test:
        lines.append(_row("test", [_value(summary.test.get(m)) for m in METRICS]))
    return lines


def _entries(rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(name) for name, _ in rows)
    return [f"  {name:<{width}}  {text}" for name, text in rows]


def format_summary(summary: CellSummary, closing: Closing | None = None) -> str:
    """What a job prints at its end: the table, then where its results are and what to run
    next (the closing block)."""
    closing = closing or Closing()
    ended = f"cell {summary.status}"
    if closing.elapsed_s is not None:
        ended = f"Job done in {format_duration(closing.elapsed_s)}: {ended}"
    else:
        ended = ended[0].upper() + ended[1:]
    if summary.error:
        ended += f" ({summary.error})"
    lines = ["", *format_table(summary), "", ended]
    where = []
    if closing.output_dir is not None:
        where.append(("output folder", str(closing.output_dir)))
    if closing.model_card is not None:
        where.append(("model card", str(closing.model_card)))
    where.append(("MLflow cell run", f"{summary.cell_run_id} (cell key {summary.cell_key})"))
    lines += _entries(where)
    commands = []
    if closing.predict:
        commands.append(("predict", closing.predict))
    if closing.compare:
        commands.append(("compare", closing.compare))
    if summary.ui_command:
        commands.append(("browse", summary.ui_command))
    if summary.ui_link:
        commands.append(("", f"then open the runs table: {summary.ui_link}"))
    if commands:
        lines += ["Next:", *_entries(commands)]
    return "\n".join(lines)
