"""The leave-one-source-out protocol run: every held-out source's scores and their mean.

Why: the protocol's answer ("how does this recipe do on a hospital it never saw?") is spread
over one cell per held-out member (`experiment.holdout`). When the last of them finishes, its
job logs one run (`fus2net.role=loso`) that holds them side by side, so the runs table, the
MLflow charts and `fus2net-compare --loso` read the protocol at a glance: for each member
`heldout/<member>/<metric>` (AUC, sensitivity and specificity at the operating point chosen on
the training sources, AdaBN's AUC, the in-domain CV AUC), and `heldout/mean/<metric>`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from fus2net.cell.context import JobContext
from fus2net.experiment.cells import cell_name
from fus2net.tracking import schema

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)

# Per held-out source: the cell metric -> its name in the protocol run.
PROTOCOL_METRICS = {
    f"{schema.HELDOUT}/auc": "auc",
    f"{schema.HELDOUT}/sens95_sensitivity": "sens95_sensitivity",
    f"{schema.HELDOUT}/sens95_specificity": "sens95_specificity",
    f"{schema.HELDOUT}/adabn/auc": "adabn/auc",
    f"{schema.HELDOUT}/without_adabn/auc": "without_adabn/auc",
    f"{schema.HELDOUT}/patient_auc": "patient_auc",
    "cv/auc_mean": "cv_auc",
    "test/auc": "test_auc",
}
MEAN = "mean"


def protocol_members(ctx: JobContext) -> list[str]:
    """Every member of the pool before one was held out, in the pool's order."""
    held_out = str(ctx.cfg.cv.holdout_source)
    return sorted([*map(str, ctx.cfg.dataset.members), held_out])


def protocol_name(tags: dict[str, str], key: str) -> str:
    """`leave-one-source-out · <every override that changes results but the held-out
    member> · <key>`: what the protocol's cells share (in a sweep that varies only the held-out
    member too), then the protocol key's start."""
    held_out = f"{schema.OVERRIDE_PREFIX}cv.holdout_source"
    shared = {k: v for k, v in tags.items() if k not in (schema.SWEPT, held_out)}
    return f"leave-one-source-out{schema.NAME_SEPARATOR}{cell_name(shared, key)}"


def protocol_metrics(cells: dict[str, Run]) -> dict[str, float]:
    """`heldout/<member>/<metric>` of each member's cell and `heldout/mean/<metric>` over the
    members that have it (a mean only where every member has the metric)."""
    metrics: dict[str, float] = {}
    for member, run in cells.items():
        for source, name in PROTOCOL_METRICS.items():
            value = run.data.metrics.get(source)
            if value is not None and np.isfinite(value):
                metrics[f"{schema.HELDOUT}/{member}/{name}"] = float(value)
    for name in PROTOCOL_METRICS.values():
        values = [metrics.get(f"{schema.HELDOUT}/{m}/{name}") for m in cells]
        if values and all(v is not None for v in values):
            metrics[f"{schema.HELDOUT}/{MEAN}/{name}"] = float(np.mean(values))
    return metrics


def log_protocol_run(ctx: JobContext) -> str | None:
    """Log (or update) the protocol run once every member's held-out cell is FINISHED; its id,
    or None while some are missing. A failure here is logged, never fatal to the cell."""
    key = ctx.tags.get(schema.LOSO_KEY)
    if key is None:
        return None
    try:
        return _log_protocol_run(ctx, key)
    except Exception as err:  # the cell is scored and closed; the summary can be redone
        log.error("leave-one-source-out summary not logged: %s", err)
        return None


def _log_protocol_run(ctx: JobContext, key: str) -> str | None:
    tracker = ctx.tracker
    found = tracker.search_runs(schema.role_filter(schema.Role.CELL, **{schema.LOSO_KEY: key}))
    cells: dict[str, Run] = {}
    for run in sorted(found, key=lambda r: r.info.start_time or 0):  # newest of each wins
        if run.info.status == "FINISHED":
            cells[run.data.tags.get(schema.HOLDOUT_SOURCE, "")] = run
    members = protocol_members(ctx)
    missing = [m for m in members if m not in cells]
    if missing:
        log.info(
            "leave-one-source-out: %s still to be held out (-m cv.holdout_source=%s)",
            ", ".join(missing),
            ",".join(members),
        )
        return None
    cells = {m: cells[m] for m in members}
    metrics = protocol_metrics(cells)
    existing = tracker.search_runs(schema.role_filter(schema.Role.LOSO, **{schema.LOSO_KEY: key}))
    if existing:
        run_id = existing[0].info.run_id
    else:
        name = protocol_name(ctx.tags, key)
        dropped = (schema.CELL_KEY, schema.HOLDOUT_SOURCE)
        tags = {k: v for k, v in ctx.tags.items() if k not in dropped}
        tags[schema.ROLE] = schema.Role.LOSO.value
        run_id = tracker.start_run(name, tags)
    tracker.set_tags(
        run_id,
        {
            schema.LOSO_CELLS: " ".join(f"{m}:{cells[m].info.run_id}" for m in members),
            schema.SWEEP: ctx.tags.get(schema.SWEEP, schema.NO_SWEEP),
        },
    )
    tracker.log_metrics(run_id, metrics)
    tracker.end_run(run_id, "FINISHED")

    def auc(member: str) -> str:
        value = metrics.get(f"{schema.HELDOUT}/{member}/auc")
        return "n/a" if value is None else f"{value:.3f}"

    by_member = ", ".join(f"{m} {auc(m)}" for m in members)
    log.info(
        "leave-one-source-out: held-out AUC %s; mean %s (run %s)", by_member, auc(MEAN), run_id
    )
    return run_id
