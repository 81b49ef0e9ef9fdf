"""Writing a comparison to disk (HTML, Markdown, CSV, PNG) and logging it as an MLflow run.

The comparison run sits in the same experiment as the cells it compares, tagged
`fus2net.role=comparison` so that no later comparison mistakes it for a cell, and holds the
report as artifacts: one click from the sweep in the MLflow UI.
"""

from __future__ import annotations

from pathlib import Path

from fus2net.reporting.compare.comparison import Comparison
from fus2net.reporting.compare.figures import write_figures
from fus2net.reporting.compare.html import render_html
from fus2net.reporting.compare.table import format_markdown, table_frame
from fus2net.tracking import schema
from fus2net.tracking.mlflow_tracker import MlflowTracker


def write_report(
    comparison: Comparison, out_dir: Path, title: str, command: str = ""
) -> dict[str, Path]:
    """report.html, table.md, table.csv and the figures in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {f"{name}.png": path for name, path in write_figures(comparison, out_dir).items()}
    figures = {path.stem: path for path in files.values()}
    files["report.html"] = out_dir / "report.html"
    files["report.html"].write_text(render_html(comparison, figures, title, command), "utf-8")
    files["table.md"] = out_dir / "table.md"
    files["table.md"].write_text(format_markdown(comparison, title), "utf-8")
    files["table.csv"] = out_dir / "table.csv"
    table_frame(comparison).to_csv(files["table.csv"], index=False)
    return files


def log_comparison(
    tracker: MlflowTracker, comparison: Comparison, files: dict[str, Path], title: str
) -> str:
    """A FINISHED run with the report as artifacts; returns its run id."""
    ids = ",".join(v.cell.run_id for v in comparison.variants)
    sweep = comparison.source["sweep"]
    run_id = tracker.start_run(
        title,
        {
            schema.ROLE: schema.Role.COMPARISON.value,
            schema.SWEEP: sweep,
            schema.COMPARED_RUNS: ids,
            schema.REFERENCE: comparison.reference,
            schema.FILTER: comparison.source["filter"],
        },
    )
    try:
        tracker.log_params(
            run_id,
            {
                "reference": comparison.reference,
                "by": " ".join(comparison.keys),
                "n_variants": len(comparison.variants),
                "n_skipped": len(comparison.skipped),
                "bootstrap.n": comparison.n_boot,
                "bootstrap.level": comparison.level,
                "bootstrap.unit": "patient" if comparison.grouped else "image",
            },
        )
        tracker.log_artifacts(run_id, files.values())
        tracker.end_run(run_id, "FINISHED")
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    return run_id
