"""`fus2net-compare`: after a sweep, which variant is better, by how much, and is it real.

fus2net-train -m optimizer=adam,rmsprop,sgd
fus2net-compare                      # the latest sweep in ./mlruns (or $FUS2NET_HOME/mlruns)
fus2net-compare --experiment paper-table1-channels --reference data.channels=3
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fus2net.reporting.compare.runs import SweepRuns


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fus2net-compare",
        description="Compare the cells of a sweep from MLflow: cross-validation mean ± sd, test "
        "set with bootstrap CIs, paired DeLong and McNemar tests against a reference; prints the "
        "table and writes an HTML report, Markdown, CSV and figures, also logged to MLflow.",
    )
    store = parser.add_argument_group("which runs")
    store.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI, else "
        "sqlite:///$FUS2NET_HOME/mlruns/mlflow.db as fus2net-train writes)",
    )
    store.add_argument("--experiment", default="fus2net", help="MLflow experiment name")
    store.add_argument(
        "--sweep",
        default=None,
        help="sweep tag, or its end (e.g. the time folder 18-47-30); 'all' for every sweep. "
        "Default: the latest sweep (unless --filter is given)",
    )
    store.add_argument(
        "--filter",
        default="",
        help="MLflow search filter, AND-ed with --sweep, e.g. \"params.`data.image_size` = '299'\"",
    )
    table = parser.add_argument_group("the table")
    table.add_argument(
        "--by",
        nargs="+",
        metavar="KEY",
        default=None,
        help="name rows by these config groups/keys (default: the keys that vary)",
    )
    table.add_argument(
        "--reference",
        default=None,
        help="the row to test the others against: its label, a value in it (e.g. adam) or its "
        "row number (default: the first row)",
    )
    table.add_argument(
        "--metrics",
        nargs="+",
        metavar="NAME",
        default=[],
        help="extra cell-run metrics to show as columns, e.g. calibration/test_ece",
    )
    table.add_argument(
        "--operating-points",
        action="store_true",
        help="show each operating point the cells logged (sens95 or another target, Youden): "
        "threshold, test sensitivity and specificity",
    )
    table.add_argument(
        "--loso",
        action="store_true",
        help="compare leave-one-source-out protocols (cv.holdout_source sweeps): each held-out "
        "source's AUC, sensitivity and specificity at the sens95 point, and their mean",
    )
    table.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    table.add_argument("--level", type=float, default=0.95, help="confidence level")
    table.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    out = parser.add_argument_group("output")
    out.add_argument(
        "--out", type=Path, default=None, help="folder (default: outputs/compare/<timestamp>)"
    )
    out.add_argument("--title", default=None, help="report title")
    out.add_argument(
        "--no-log", action="store_true", help="do not log the report to MLflow as a run"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.bootstrap < 100:
        raise SystemExit("error: --bootstrap needs at least 100 resamples (2000 recommended)")
    if not 0.5 <= args.level < 1:
        raise SystemExit(f"error: --level {args.level}: give a confidence level like 0.95")

    from fus2net.reporting.compare.comparison import build_comparison
    from fus2net.reporting.compare.report import log_comparison, write_report
    from fus2net.reporting.compare.runs import read_sweep
    from fus2net.reporting.compare.table import format_text
    from fus2net.tracking.mlflow_tracker import MlflowTracker
    from fus2net.tracking.uris import TrackingError, default_tracking_uri, redact_logs

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # as fus2net-train
    redact_logs()  # an MLflow error may quote the store's URL, credentials included
    if args.loso:
        _compare_protocols(args)
        return
    try:
        uri = args.tracking_uri or default_tracking_uri()
        tracker = MlflowTracker.open_existing(uri, args.experiment)
        runs = read_sweep(tracker, args.sweep, args.filter)
        with tempfile.TemporaryDirectory(prefix="fus2net-compare-") as downloads:
            comparison = build_comparison(
                tracker, runs, Path(downloads), args.by, args.reference,
                n_boot=args.bootstrap, level=args.level, seed=args.seed,
                extra_metrics=_extra_metrics(args, runs),
            )  # fmt: skip
        sweep = comparison.source["sweep"]
        title = args.title or f"fus2net comparison: {args.experiment}, sweep {sweep}"
        out_dir = args.out or Path("outputs/compare") / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
        command = shlex.join(["fus2net-compare", *(sys.argv[1:] if argv is None else argv)])
        files = write_report(comparison, out_dir, title, command)
        run_id = None if args.no_log else log_comparison(tracker, comparison, files, title)
    except (TrackingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    print(title, "\n")
    print(format_text(comparison))
    print(f"Report: {files['report.html']}  (table.md, table.csv, figures beside it)")
    if run_id:
        print(f"Logged to MLflow as comparison run {run_id}; browse: {tracker.ui_command()}")


def _compare_protocols(args: argparse.Namespace) -> None:
    """`--loso`: the protocol runs of the sweep in one table, written beside the report."""
    from fus2net.reporting.compare.loso_table import (
        format_protocols,
        protocol_table,
        read_protocols,
        write_protocols,
    )
    from fus2net.tracking.mlflow_tracker import MlflowTracker
    from fus2net.tracking.uris import TrackingError, default_tracking_uri

    try:
        uri = args.tracking_uri or default_tracking_uri()
        tracker = MlflowTracker.open_existing(uri, args.experiment)
        table = protocol_table(read_protocols(tracker, args.sweep))
    except (TrackingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    out_dir = args.out or Path("outputs/compare") / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    files = write_protocols(table, out_dir)
    print(format_protocols(table))
    print(f"Table: {files[0]} ({files[1].name} beside it)")


# What each operating point a cell logged shows with --operating-points, in this order.
OPERATING_POINT_PARTS = ("threshold", "test_sensitivity", "test_specificity")


def _extra_metrics(args: argparse.Namespace, runs: SweepRuns) -> list[str]:
    """`--metrics` plus, with `--operating-points`, every operating point the cells logged
    (`sens<NN>` for any target sensitivity, `youden`): thresholds chosen on out-of-fold data."""
    extra = list(args.metrics)
    if args.operating_points:
        names = {m for cell in runs.cells for m in cell.metrics if m.startswith("operating/")}
        points = sorted(
            {n.split("/", 1)[1].rsplit("_", 1)[0] for n in names if n.endswith("_threshold")}
        )
        extra += [
            name
            for point in points
            for part in OPERATING_POINT_PARTS
            if (name := f"operating/{point}_{part}") in names and name not in extra
        ]
    return extra


if __name__ == "__main__":
    main()
