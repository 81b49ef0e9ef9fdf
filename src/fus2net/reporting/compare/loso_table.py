"""`fus2net-compare --loso`: leave-one-source-out protocols side by side.

Why: a recipe meant for hospitals it never saw is chosen by its mean held-out AUC over the
sources (DomainBed's leave-one-domain-out selection), not by in-domain CV. Each protocol run
(`fus2net.role=loso`, logged by `experiment.loso_summary`) holds every source's held-out scores;
this table puts the protocols of a sweep (or of every sweep) in rows, the best mean marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from fus2net.reporting.compare.runs import build_query
from fus2net.tracking import schema

if TYPE_CHECKING:
    from mlflow.entities import Run

    from fus2net.tracking.mlflow_tracker import MlflowTracker

MEAN = "mean"
# Per source: (metric in the protocol run, column heading).
COLUMNS = (
    ("auc", "AUC"),
    ("sens95_sensitivity", "sens@sens95"),
    ("sens95_specificity", "spec@sens95"),
    ("adabn/auc", "AdaBN AUC"),  # logged beside the AUC when evaluation.adabn is off ...
    ("without_adabn/auc", "AUC w/o AdaBN"),  # ... and this one when it is on (AUC is AdaBN's)
    ("cv_auc", "CV AUC"),
)


@dataclass
class ProtocolTable:
    frame: pd.DataFrame  # one row per protocol run
    members: list[str]
    best: str | None  # the protocol with the highest mean held-out AUC


def read_protocols(tracker: MlflowTracker, sweep: str | None) -> list[Run]:
    """The protocol runs of `sweep` (its tag or end; None or 'all': every one)."""
    query = build_query(None if sweep in (None, "all") else sweep, "")
    role = f"tags.`{schema.ROLE}` = '{schema.Role.LOSO.value}'"
    runs = tracker.search_all_runs(f"{role} AND {query}" if query else role)
    if not runs:
        raise ValueError(
            f"no leave-one-source-out protocol runs in experiment {tracker.experiment_name!r}"
            + (f" for sweep {sweep!r}" if sweep not in (None, "all") else "")
            + ": run fus2net-train -m ... dataset=<pooled> cv.holdout_source=<each member>, "
            "one cell per member (docs/real-data.md, 'Leave-one-source-out')"
        )
    return [r for r in runs if r.info.status == "FINISHED"]


def protocol_table(runs: list[Run]) -> ProtocolTable:
    """Rows of protocol runs: each source's columns, then the means; sorted by mean AUC."""
    members = sorted(
        {
            key.split("/")[1]
            for run in runs
            for key in run.data.metrics
            if key.startswith(f"{schema.HELDOUT}/") and key.split("/")[1] != MEAN
        }
    )
    rows = []
    for run in runs:
        metrics = run.data.metrics
        row: dict[str, object] = {"protocol": run.info.run_name, "run": run.info.run_id}
        for member in [*members, MEAN]:
            for metric, heading in COLUMNS:
                row[f"{member} {heading}"] = metrics.get(f"{schema.HELDOUT}/{member}/{metric}")
        rows.append(row)
    frame = pd.DataFrame(rows).sort_values(f"{MEAN} AUC", ascending=False, na_position="last")
    frame = frame.reset_index(drop=True)
    best = None if frame[f"{MEAN} AUC"].isna().all() else str(frame.loc[0, "protocol"])
    return ProtocolTable(frame, members, best)


def _cell(value: object) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.3f}"


def format_protocols(table: ProtocolTable) -> str:
    """The text table: one block of columns per held-out source, then the mean."""
    lines = ["Leave-one-source-out: each source scored by a model trained on the others only"]
    headings = [f"{m} {h}" for m in [*table.members, MEAN] for _, h in COLUMNS]
    width = max(len(str(p)) for p in table.frame["protocol"])
    lines.append(f"{'protocol':<{width}}  " + "  ".join(f"{h:>{len(h)}}" for h in headings))
    for _, row in table.frame.iterrows():
        mark = " *" if row["protocol"] == table.best else ""
        values = "  ".join(f"{_cell(row[h]):>{len(h)}}" for h in headings)
        lines.append(f"{row['protocol']:<{width}}  {values}{mark}")
    lines.append(
        "* highest mean held-out AUC (the selection rule); sens/spec at the operating point "
        "chosen for 95 % sensitivity on the training sources' out-of-fold predictions; AdaBN: "
        "batch-norm statistics re-estimated on the held-out source's images; CV AUC: in-domain"
    )
    return "\n".join(lines)


def write_protocols(table: ProtocolTable, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, markdown = out_dir / "loso.csv", out_dir / "loso.md"
    table.frame.to_csv(csv, index=False)
    shown = table.frame.drop(columns=["run"])
    head = "| " + " | ".join(shown.columns) + " |"
    rule = "|:---|" + "---:|" * (len(shown.columns) - 1)
    body = [
        "| " + " | ".join(v if isinstance(v, str) else _cell(v) for v in row) + " |"
        for row in shown.itertuples(index=False)
    ]
    markdown.write_text("\n".join([head, rule, *body]) + "\n")
    return [csv, markdown]
