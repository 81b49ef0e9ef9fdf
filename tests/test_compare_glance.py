"""fus2net-compare at a glance (issue 25): the first paragraph, degenerate variants, ΔAUC with
its interval, class names from the cells' dataset inputs, and the CV vs pooled AUC note."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fus2net.evaluation.stats import delong_interval, delong_test
from fus2net.reporting.compare.comparison import build_comparison
from fus2net.reporting.compare.html import CAPTIONS, render_html
from fus2net.reporting.compare.runs import read_sweep
from fus2net.reporting.compare.table import format_markdown, format_text, table_frame
from fus2net.tracking import schema
from fus2net.tracking.mlflow_tracker import MlflowTracker
from test_compare import TEST_LABELS, TEST_PROBS, log_cell


def _tracker(root: Path) -> MlflowTracker:
    return MlflowTracker(f"sqlite:///{root}/mlruns/mlflow.db", "fus2net", str(root / "artifacts"))


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> MlflowTracker:
    """adam (reference), sgd (better, no evidence) and rmsprop (a constant 0.5: every image
    called malignant, AUC 0.5, lower with evidence); class names only in the dataset inputs."""
    tmp = tmp_path_factory.mktemp("glance")
    tracker = _tracker(tmp)
    for optimizer in ("adam", "sgd", "rmsprop"):
        cell = log_cell(tracker, tmp, optimizer)
        test_set = schema.image_set(
            "synthetic",
            "f" * 64,
            schema.Context.TEST,
            [f"test_{i}.png" for i in range(10)],
            TEST_LABELS.tolist(),
            ["benign", "malignant"],
            str(tmp),
        )
        tracker.log_datasets(cell, [test_set])
    return tracker


def test_first_paragraph_names_the_best_and_what_differs_with_evidence(
    three: MlflowTracker, tmp_path: Path
) -> None:
    comparison = build_comparison(three, read_sweep(three), tmp_path / "dl", n_boot=200)
    text = format_text(comparison)
    first = " ".join(text.split("\n\n")[0].split())  # unwrapped
    assert first.startswith(
        "Best on the primary metric, test AUC (10 held-out images): optimizer=sgd, 1.000 "
        "[95% CI 1.000, 1.000] (then optimizer=adam 0.920, optimizer=rmsprop 0.500)."
    )
    rms = delong_test(TEST_LABELS, TEST_PROBS["rmsprop"], TEST_PROBS["adam"])
    low, high = delong_interval(rms, 0.95)
    assert (
        "With evidence against the reference (optimizer=adam), Holm-adjusted p < 0.05: "
        f"optimizer=rmsprop has a lower test AUC (-0.420, 95% CI [{low:+.3f}, {high:+.3f}]; "
        "Holm p <0.001)" in first
    )
    assert "optimizer=sgd has" not in first  # +0.080 without evidence
    # rmsprop calls every image malignant: warned about before its AUC is read
    assert (
        "Warning: optimizer=rmsprop is degenerate at threshold 0.5 (test specificity 0.00 %: "
        "(nearly) every benign image is called malignant)" in first
    )
    assert "optimizer=adam is degenerate" not in first
    # class names from the dataset inputs, not "label 0 (negative)"
    assert "test set: 10 images: 5 benign (label 0), 5 malignant (label 1)" in text
    # the warning also sits under the test table
    assert "Warning: degenerate at threshold 0.5 (test sensitivity or specificity below 10%)" in (
        text
    )

    markdown = format_markdown(comparison, "t")
    head = markdown.split("## What the variants share")[0]
    assert "Best on the primary metric" in head and "> **Warning: optimizer=rmsprop" in head
    html = render_html(comparison, {}, "t")
    assert html.index('<p class="glance">Best on the primary metric') < html.index(
        "<h2>What the variants share"
    )
    assert '<p class="warning"><b>Warning: optimizer=rmsprop is degenerate' in html


def test_delta_auc_has_its_interval_beside_the_p_values(
    three: MlflowTracker, tmp_path: Path
) -> None:
    comparison = build_comparison(three, read_sweep(three), tmp_path / "dl", n_boot=200)
    text = format_text(comparison)
    header = next(line for line in text.splitlines() if "Holm test" in line).split()
    assert header[1:8] == ["ΔAUC", "test", "95%", "CI", "test", "p", "DeLong"]
    sgd = delong_test(TEST_LABELS, TEST_PROBS["sgd"], TEST_PROBS["adam"])
    low, high = delong_interval(sgd, 0.95)
    row = next(
        line
        for line in text.splitlines()
        if line.startswith("optimizer=sgd  ") and "+0.080" in line
    )
    assert f"+0.080 [{low:+.3f}, {high:+.3f}] {sgd.p_value:.3f}" in " ".join(row.split())
    assert low < 0 < high  # no evidence: the interval holds 0
    frame = table_frame(comparison).set_index("variant")
    assert frame.loc["optimizer=sgd", "delta_auc_test_low"] == pytest.approx(low)
    assert frame.loc["optimizer=sgd", "delta_auc_test_high"] == pytest.approx(high)
    assert frame.loc["optimizer=rmsprop", "degenerate"].startswith("optimizer=rmsprop is")
    assert frame.loc["optimizer=adam", "degenerate"] == ""
    # at another level, the column says so
    other = build_comparison(three, read_sweep(three), tmp_path / "dl2", n_boot=200, level=0.9)
    assert "90% CI test" in format_text(other)


def test_notes_say_why_the_cv_auc_and_the_pooled_roc_legend_differ(
    three: MlflowTracker, tmp_path: Path
) -> None:
    comparison = build_comparison(three, read_sweep(three), tmp_path / "dl", n_boot=200)
    markdown = format_markdown(comparison, "t")
    note = next(line for line in markdown.splitlines() if "ROC curves (figure legend" in line)
    adam = comparison.variants[0]
    assert "mean of each fold's own AUC" in note and "pools every fold's" in note
    assert f"optimizer=adam {adam.cv['auc_mean']:.3f} vs {adam.oof['auc']:.3f}" in note
    assert "not the cross-validation table's AUC" in CAPTIONS["roc"]  # under the ROC figure
    assert "mean of each fold&#x27;s own AUC" in render_html(comparison, {}, "t")


def test_nothing_differs_and_one_variant(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    log_cell(tracker, tmp_path, "adam")
    one = build_comparison(tracker, read_sweep(tracker), tmp_path / "dl", n_boot=200)
    first = " ".join(format_text(one).split("\n\n")[0].split())
    assert first.startswith("One variant (all cells): test AUC (10 held-out images) 0.920 [95% CI")
    assert "Warning" not in first
    log_cell(tracker, tmp_path, "sgd")
    two = build_comparison(tracker, read_sweep(tracker), tmp_path / "dl2", n_boot=200)
    first = " ".join(format_text(two).split("\n\n")[0].split())
    assert (
        "Nothing differs from the reference (optimizer=adam) with evidence: no Holm-adjusted p "
        "is below 0.05" in first
    )
    assert not np.isnan(two.variants[1].contrast.test_auc.p_value)
