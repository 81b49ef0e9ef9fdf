"""fus2net-compare at its seams: undefined metrics shown as n/a, never 0; cells whose fold runs
are gone left out with the reason; an unknown --metrics name refused with the closest names
(issue 24). The cells are logged as fus2net-train logs them (tests/test_compare.py's log_cell)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fus2net.cli.compare import main as compare_main
from fus2net.evaluation.metrics import binary_metrics, mean_std
from fus2net.tracking.mlflow_tracker import MlflowTracker
from test_compare import log_cell


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One store (creating an MLflow database takes seconds) with two experiments:

    - `fus2net`: adam and sgd complete; one rmsprop cell whose fold run 1 was deleted from the
      store, one whose fold run 1 did not finish (both finished cells with folds_run 0,1);
    - `no-malignant`: adam and sgd whose test set has no malignant image.
    """
    tmp = tmp_path_factory.mktemp("store")
    tracker = MlflowTracker(
        f"sqlite:///{tmp}/mlruns/mlflow.db", "fus2net", str(tmp / "mlruns/artifacts")
    )
    log_cell(tracker, tmp, "adam")
    log_cell(tracker, tmp, "sgd")
    for key, seed in (("k-deleted", 1), ("k-failed", 2)):
        cell = log_cell(tracker, tmp, "rmsprop", key=key, extra_params={"seed": seed})
        (fold1,) = [r for r in tracker.child_runs(cell) if r.data.tags["fus2net.fold"] == "1"]
        if key == "k-deleted":
            tracker.client.delete_run(fold1.info.run_id)
        else:
            tracker.end_run(fold1.info.run_id, "FAILED")

    negatives = MlflowTracker(tracker.uri, "no-malignant", str(tmp / "mlruns/artifacts"))
    for optimizer in ("adam", "sgd"):
        cell = log_cell(negatives, tmp / "neg", optimizer)
        predictions = tmp / "neg" / "logged" / cell / "predictions.csv"
        frame = pd.read_csv(predictions)
        frame = frame[(frame["split"] == "oof") | (frame["label"] == 0)]  # test: benign only
        frame.to_csv(predictions, index=False)
        negatives.log_artifacts(cell, [predictions])  # replaces the logged one
    return tracker.uri


def _compare(uri: str, tmp_path: Path, *args: str) -> None:
    compare_main(["--tracking-uri", uri, "--out", str(tmp_path / "report"),
                  "--bootstrap", "200", "--no-log", *args])  # fmt: skip


# --- 4. undefined metrics are n/a, never 0 ------------------------------------------------------


def test_a_metric_with_nothing_to_count_is_nan_not_zero() -> None:
    benign_only = binary_metrics(np.zeros(4, int), np.array([0.1, 0.7, 0.2, 0.3]))
    assert math.isnan(benign_only["sensitivity"]) and math.isnan(benign_only["auc"])
    assert benign_only["specificity"] == 0.75 and benign_only["precision"] == 0.0  # 0 of 1 call
    malignant_only = binary_metrics(np.ones(3, int), np.array([0.1, 0.2, 0.3]))
    assert math.isnan(malignant_only["specificity"]) and math.isnan(malignant_only["precision"])
    assert malignant_only["sensitivity"] == 0.0  # defined: 0 of 3 malignant found
    assert all(math.isnan(v) for v in binary_metrics(np.array([]), np.array([])).values())
    # the cross-validation mean is over the folds where a metric is defined, never a 0 in it
    cv = mean_std([{"sensitivity": 0.8}, {"sensitivity": math.nan}, {"sensitivity": 0.6}])
    assert cv["sensitivity_mean"] == pytest.approx(0.7)


def test_compare_shows_n_a_for_a_test_set_without_a_malignant_image(
    uri: str, tmp_path: Path, capsys
) -> None:
    _compare(uri, tmp_path, "--experiment", "no-malignant")
    printed = capsys.readouterr().out
    assert "test set: 5 images: 5 label 0 (negative), 0 label 1 (positive)" in printed
    test_table = printed.split("Held-out test set")[1].split("\n\n")[0]
    rows = {line.split()[0]: line for line in test_table.splitlines()[2:] if line.strip()}
    for variant in ("optimizer=adam", "optimizer=sgd"):
        cells = re.split(r"\s{2,}", rows[variant].strip())
        # variant, n, accuracy, sensitivity, specificity, precision, AUC
        assert cells[3] == "n/a [n/a, n/a]", "sensitivity without a malignant image"
        assert cells[6] == "n/a [n/a, n/a]", "AUC with one class"
        assert not cells[4].startswith("n/a"), "specificity is defined"
    assert "0.00 [0.00, 0.00]" not in test_table
    table = pd.read_csv(tmp_path / "report" / "table.csv").set_index("variant")
    assert table.loc["optimizer=adam", "test_sensitivity"] != 0
    assert table[["test_sensitivity", "test_auc"]].isna().all().all()
    markdown = (tmp_path / "report" / "table.md").read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    assert "n/a [n/a, n/a]" in markdown and "n/a [n/a, n/a]" in html


# --- 5. a cell with fewer finished fold runs than it ran is not compared -----------------------


def test_a_cell_whose_fold_runs_are_gone_is_not_compared(uri: str, tmp_path: Path, capsys):
    _compare(uri, tmp_path)
    printed = capsys.readouterr().out
    compared = printed.split("Cross-validation")[1].split("\n\n")[0]
    assert re.search(r"optimizer=adam +2 ", compared) and re.search(r"optimizer=sgd +2 ", compared)
    assert "rmsprop" not in printed.split("Not compared")[0], "never averaged in"
    left_out = printed.split("Not compared")[1].splitlines()
    incomplete = [line for line in left_out if line.strip().startswith("INCOMPLETE")]
    assert len(incomplete) == 2
    for line in incomplete:
        assert "fold run(s) [1] of the 2 it ran are not in the store as finished runs" in line
    table = pd.read_csv(tmp_path / "report" / "table.csv")
    assert sorted(table.loc[table["status"] == "INCOMPLETE", "variant"]) == [
        "optimizer=rmsprop",
        "optimizer=rmsprop",
    ]


# --- 6. an unknown --metrics name is refused with the closest names ----------------------------


def test_an_unknown_metric_name_exits_2_with_did_you_mean(uri: str, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _compare(uri, tmp_path, "--metrics", "operating/sens95_threshol")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --metrics operating/sens95_threshol: no compared cell run")
    assert "did you mean operating/sens95_threshold?" in err
    assert not (tmp_path / "report").exists(), "nothing written"
    _compare(uri, tmp_path, "--metrics", "operating/sens95_threshold")  # the right name works
    assert "operating/sens95_threshold" in capsys.readouterr().out
