"""fus2net-compare on a tracking store with known predictions, and on a real tiny sweep."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fus2net.cli.compare import main as compare_main
from fus2net.evaluation.metrics import METRICS, binary_metrics, mean_std
from fus2net.evaluation.stats import DelongResult, delong_test, holm, proportion_interval
from fus2net.reporting.compare.comparison import (
    Comparison,
    Contrast,
    VariantResult,
    build_comparison,
    variant_settings,
    varying_keys,
)
from fus2net.reporting.compare.figures import (
    LABEL_WIDTH,
    fold_spread_figure,
    metric_bars_figure,
    whiskers,
)
from fus2net.reporting.compare.html import render_html
from fus2net.reporting.compare.runs import CellRun, read_sweep
from fus2net.reporting.compare.table import (
    CONTRAST_COLUMNS,
    best_rows,
    format_markdown,
    format_text,
    table_frame,
    verdict,
)
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.uris import TrackingError, without_credentials
from jobs import TINY, run_module, run_train

SWEEP = "outputs/multirun/2026-01-02/10-00-00"
OLD_SWEEP = "outputs/multirun/2026-01-01/09-00-00"
LATER_SWEEP = "outputs/multirun/2026-01-03/11-00-00"

# Ten test images. Reference "adam": 8/10 right at 0.5, AUC 23/25 (hand count, ties = 1/2).
# "sgd": all right, AUC 1. Only sgd is right on images 3 and 7: McNemar 2:0, p = 0.5.
TEST_LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
TEST_PROBS = {
    "adam": np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.4, 0.9, 0.6]),
    "sgd": np.array([0.1, 0.1, 0.2, 0.2, 0.3, 0.8, 0.8, 0.9, 0.9, 0.7]),
    "rmsprop": np.full(10, 0.5),
}
OOF_LABELS = np.tile([0, 1], 10)
FOLD_ACCURACY = {"adam": (0.7, 0.9), "sgd": (0.85, 0.95), "rmsprop": (0.5, 0.5)}


def _predictions(optimizer: str, shuffle: bool) -> pd.DataFrame:
    rng = np.random.default_rng(len(optimizer))
    oof = pd.DataFrame(
        {
            "path": [f"/data/train_{i}.png" for i in range(20)],
            "label": OOF_LABELS,
            "prob": np.clip(OOF_LABELS * 0.4 + rng.random(20) * 0.6, 0, 1),
            "fold": np.arange(20) % 2,
            "split": "oof",
        }
    )
    test = pd.DataFrame(
        {
            "path": [f"/data/test_{i}.png" for i in range(10)],
            "label": TEST_LABELS,
            "prob": TEST_PROBS[optimizer],
            "fold": "ensemble",
            "split": "test",
        }
    )
    frame = pd.concat([oof, test], ignore_index=True)
    return frame.sample(frac=1, random_state=0) if shuffle else frame


def log_cell(
    tracker: MlflowTracker,
    tmp: Path,
    optimizer: str,
    sweep: str = SWEEP,
    status: str = "FINISHED",
    folds_run: str = "0,1",
    key: str | None = None,
    extra_tags: dict[str, str] | None = None,
    extra_params: dict[str, object] | None = None,
) -> str:
    """A cell and its fold runs exactly as fus2net-train logs them (experiment/folds.py and
    cell/scoring.py)."""
    tags = {
        "fus2net.cell_key": key or f"key-{optimizer}",
        "fus2net.dataset_fingerprint": "f" * 64,
        "fus2net.dataset": "synthetic",
        "sweep": sweep,
        "hydra.mode": "multirun",
        "overrides": f"optimizer={optimizer}",
        "override.optimizer": optimizer,
        "choice.optimizer": optimizer,
        "choice.model": "fus2net",
        "mlflow.source.git.commit": "0123456789abcdef",
        "git.dirty": "False",
        **(extra_tags or {}),
    }
    params = {
        "optimizer._target_": f"torch.optim.{optimizer}",
        "optimizer.lr": {"adam": 0.001, "sgd": 0.01, "rmsprop": 0.001}[optimizer],
        "data.image_size": 80,
        "cv.folds": 2,
        "cv.fold": None,
        "seed": 42,
        "paths.root": str(tmp / optimizer),  # differs per cell, never a variant name
        "tracking.uri": f"sqlite:///{tmp}/{optimizer}.db",
        "dataset.fingerprint": "f" * 64,
        "dataset.n_images": 30,
        **(extra_params or {}),
    }
    cell = tracker.start_run(
        f"optimizer={optimizer}", {**tags, "fus2net.role": "cell", "fus2net.folds_run": folds_run}
    )
    tracker.log_params(cell, params)
    folds = [int(f) for f in folds_run.split(",")]
    for fold in folds if status not in ("RUNNING", "SCHEDULED") else folds[:1]:
        run = tracker.start_run(
            f"fold-{fold}", {**tags, "fus2net.role": "fold", "fus2net.fold": str(fold)}, cell
        )
        accuracy = FOLD_ACCURACY[optimizer][fold]
        tracker.log_metrics(run, {f"fold/val_{m}": accuracy for m in METRICS})
        tracker.end_run(run)
    if status == "RUNNING":
        return cell  # the process died: never marked
    if status == "SCHEDULED":  # fold 1 is left to another cv.fold job
        tracker.end_run(cell, status)
        return cell
    if status != "FINISHED":
        tracker.set_tags(cell, {"fus2net.error": "RuntimeError: out of memory"})
        tracker.end_run(cell, status)
        return cell
    out = tmp / "logged" / cell
    out.mkdir(parents=True)
    _predictions(optimizer, shuffle=optimizer == "sgd").to_csv(out / "predictions.csv", index=False)
    tracker.log_metrics(
        cell,
        {
            "cv/folds_completed": len(folds),
            "operating/sens95_threshold": 0.25 if optimizer == "adam" else 0.3,
        },
    )
    tracker.log_artifacts(cell, [out / "predictions.csv"])
    tracker.end_run(cell)
    time.sleep(0.01)  # distinct start times: the sweep order
    return cell


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowTracker, dict[str, str]]:
    """One store for the module: creating an MLflow database takes seconds."""
    tmp_path = tmp_path_factory.mktemp("store")
    tracker = MlflowTracker(
        f"sqlite:///{tmp_path}/mlruns/mlflow.db", "fus2net", str(tmp_path / "mlruns/artifacts")
    )
    ids = {"old": log_cell(tracker, tmp_path, "rmsprop", sweep=OLD_SWEEP)}
    # a cell of the old sweep that a later sweep reused: it carries the later sweep's tag now
    reused = {"fus2net.sweeps": f"{OLD_SWEEP} {LATER_SWEEP}"}
    ids["reused"] = log_cell(tracker, tmp_path, "sgd", LATER_SWEEP, key="k0", extra_tags=reused)
    ids["superseded"] = log_cell(tracker, tmp_path, "adam", key="key-adam")
    ids["adam"] = log_cell(tracker, tmp_path, "adam", key="key-adam")
    ids["sgd"] = log_cell(tracker, tmp_path, "sgd")
    ids["failed"] = log_cell(tracker, tmp_path, "rmsprop", status="FAILED", key="k2")
    ids["running"] = log_cell(tracker, tmp_path, "rmsprop", status="RUNNING", key="k3")
    ids["partial"] = log_cell(tracker, tmp_path, "rmsprop", folds_run="1", key="k4")
    ids["scheduled"] = log_cell(tracker, tmp_path, "rmsprop", status="SCHEDULED", key="k5")
    return tracker, ids


def test_table_values_from_known_predictions(store, tmp_path: Path) -> None:
    tracker, ids = store
    runs = read_sweep(tracker)  # default: the latest sweep
    assert [c.run_id for c in runs.cells] == [ids["adam"], ids["sgd"]]
    comparison = build_comparison(tracker, runs, tmp_path / "dl", n_boot=500)
    assert comparison.keys == ["optimizer"] and comparison.reference == "optimizer=adam"
    adam, sgd = comparison.variants

    assert adam.cv["accuracy_mean"] == pytest.approx(0.8)
    assert adam.cv["accuracy_std"] == pytest.approx(np.std([0.7, 0.9], ddof=1))
    assert adam.test == pytest.approx(
        {"accuracy": 0.8, "sensitivity": 0.8, "specificity": 0.8, "precision": 0.8, "auc": 0.92}
    )
    assert sgd.test["accuracy"] == 1.0 and sgd.test_ci["auc"] == (1.0, 1.0)
    for v in (adam, sgd):
        for m in METRICS:
            assert v.test_ci[m][0] <= v.test[m] <= v.test_ci[m][1]

    contrast = sgd.contrast
    assert adam.contrast is None and contrast is not None
    expected = delong_test(TEST_LABELS, TEST_PROBS["sgd"], TEST_PROBS["adam"])  # sgd shuffled
    assert contrast.test_auc.difference == pytest.approx(0.08)
    assert contrast.test_auc.p_value == pytest.approx(expected.p_value)
    assert (contrast.test_accuracy.only_a_correct, contrast.test_accuracy.only_b_correct) == (2, 0)
    assert contrast.test_accuracy.p_value == pytest.approx(0.5)
    oof_adam, oof_sgd = (_predictions(o, False).query("split == 'oof'") for o in ("adam", "sgd"))
    assert contrast.oof_auc.p_value == pytest.approx(
        delong_test(OOF_LABELS, oof_sgd.prob.to_numpy(), oof_adam.prob.to_numpy()).p_value
    )
    assert sgd.oof == pytest.approx(binary_metrics(OOF_LABELS, oof_sgd.prob.to_numpy()))

    text = format_text(comparison)
    assert re.search(r"optimizer=adam +2 +80\.00 ± 14\.14 ", text)
    # sgd found 5 of 5 positives: the bootstrap's "100.00 [100.00, 100.00]" became the exact
    # interval, 0.025^(1/5) = 47.82 % (changed on purpose: issue 15)
    assert "0.920 [" in text and "100.00 [47.82, 100.00]†" in text
    assert "100.00 [100.00, 100.00]" not in text
    assert "+0.080" in text and "+20.00" in text and "0.500 (2:0)" in text
    markdown = format_markdown(comparison, "t")
    assert "| optimizer=sgd | 2 | **90.00 ± 7.07** |" in markdown  # best, now bold
    assert "Holm" in markdown and "not corrected" not in markdown  # Holm-adjusted now

    skipped = {s.run_id: s for s in comparison.skipped}
    left_out = ("superseded", "failed", "running", "partial", "scheduled")
    assert set(skipped) == {ids[k] for k in left_out}
    assert "waiting for fold(s) [1]" in skipped[ids["scheduled"]].reason
    assert skipped[ids["failed"]].status == "FAILED"
    assert "out of memory" in skipped[ids["failed"]].reason
    assert "unfinished" in skipped[ids["running"]].reason
    assert "1 of 2 folds done" in skipped[ids["running"]].reason
    assert skipped[ids["partial"]].status == "PARTIAL"
    assert skipped[ids["superseded"]].status == "SUPERSEDED"
    for s in skipped.values():
        assert s.name in text or s.run_id in text

    frame = table_frame(comparison)
    assert list(frame["status"][:2]) == ["compared", "compared"]
    assert frame.loc[1, "p_mcnemar_test"] == pytest.approx(0.5)
    assert set(frame["status"][2:]) == {"SUPERSEDED", "FAILED", "RUNNING", "PARTIAL", "SCHEDULED"}


def test_reads_in_few_store_calls_and_reads_local_artifacts_in_place(store, tmp_path) -> None:
    tracker, _ = store
    calls: dict[str, int] = {}
    client = tracker.client

    class Counting:
        def __getattr__(self, name: str):
            calls[name] = calls.get(name, 0) + 1
            return getattr(client, name)

    tracker.client = Counting()
    build_comparison(tracker, read_sweep(tracker, sweep="10-00-00"), tmp_path / "dl", n_boot=200)
    # one page per tag that names sweeps; predictions.csv read in place, not downloaded
    assert calls == {"search_runs": 2}, calls
    tracker.client = client
    paged = tracker.search_all_runs("", page_size=4)
    assert len(paged) == len(tracker.search_all_runs("")) >= 7 + 11  # cells + folds
    assert len({r.info.run_id for r in paged}) == len(paged)


def test_reference_sweep_and_by_choices(store, tmp_path: Path) -> None:
    tracker, ids = store
    runs = read_sweep(tracker, sweep=SWEEP)
    comparison = build_comparison(tracker, runs, tmp_path / "dl", reference="sgd", n_boot=200)
    assert comparison.reference == "optimizer=sgd"
    assert comparison.variants[0].contrast is not None
    with pytest.raises(ValueError, match=r"optimizer=adam; optimizer=sgd"):
        build_comparison(tracker, runs, tmp_path / "dl", reference="nadam", n_boot=200)
    with pytest.raises(ValueError, match="also differ in optimizer"):
        build_comparison(tracker, runs, tmp_path / "dl", by=["seed"], n_boot=200)
    with pytest.raises(ValueError, match=r"did you mean optimizer\.lr"):
        build_comparison(tracker, runs, tmp_path / "dl", by=["optimizer.lrr"], n_boot=200)
    everything = read_sweep(tracker, sweep="all")
    assert len(everything.sweeps) == 3 and len(everything.cells) == 4
    old = read_sweep(tracker, sweep=OLD_SWEEP)
    assert {c.run_id for c in old.cells} == {ids["old"], ids["reused"]}
    assert old.sweeps == [OLD_SWEEP]
    assert [c.run_id for c in read_sweep(tracker, sweep="11-00-00").cells] == [ids["reused"]]
    with pytest.raises(ValueError, match="matches 3 sweeps"):
        read_sweep(tracker, sweep="0-00")


def test_a_cell_resumed_in_a_later_sweep_keeps_the_folds_of_the_earlier_one(
    tmp_path: Path,
) -> None:
    """Fold 0 trained in the sweep that was stopped, fold 1 in the one that resumed the cell."""
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db", "fus2net", str(tmp_path / "art"))
    sweeps = {"fus2net.sweeps": f"{OLD_SWEEP} {SWEEP}"}
    cell = log_cell(tracker, tmp_path, "adam", sweep=SWEEP, extra_tags=sweeps)
    fold0 = next(r for r in tracker.child_runs(cell) if r.data.tags["fus2net.fold"] == "0")
    tracker.set_tags(fold0.info.run_id, {"sweep": OLD_SWEEP, "fus2net.sweeps": OLD_SWEEP})
    (found,) = read_sweep(tracker, sweep="10-00-00").cells
    assert sorted(found.folds) == [0, 1]
    comparison = build_comparison(
        tracker, read_sweep(tracker, sweep="10-00-00"), tmp_path / "dl", n_boot=200
    )
    assert comparison.variants[0].n_folds == 2
    assert comparison.variants[0].cv["accuracy_mean"] == pytest.approx(0.8)


def test_extra_cell_metrics_become_columns(store, tmp_path: Path) -> None:
    tracker, _ = store
    runs = read_sweep(tracker, sweep=SWEEP)
    comparison = build_comparison(
        tracker,
        runs,
        tmp_path / "dl",
        n_boot=200,
        extra_metrics=["operating/sens95_threshold"],
    )
    text = format_text(comparison)
    assert "Other metrics of the cell runs" in text and "operating/sens95_threshold" in text
    frame = table_frame(comparison)
    compared = frame[frame["status"] == "compared"].set_index("variant")
    assert compared.loc["optimizer=adam", "operating/sens95_threshold"] == pytest.approx(0.25)
    # a name no cell logged is a typo, not a column of n/a (issue 24)
    with pytest.raises(ValueError, match="--metrics no/such: no compared cell run logged"):
        build_comparison(tracker, runs, tmp_path / "dl", n_boot=200, extra_metrics=["no/such"])


def test_variant_names_are_the_fewest_keys_that_tell_cells_apart() -> None:
    def cell(optimizer: str, lr: str, root: str) -> CellRun:
        data = SimpleNamespace(
            tags={"choice.optimizer": optimizer, "choice.model": "fus2net"},
            params={"optimizer.lr": lr, "optimizer.name": optimizer, "paths.root": root},
        )
        return CellRun(SimpleNamespace(data=data))

    assert varying_keys([cell("adam", "1e-3", "/a"), cell("sgd", "1e-2", "/b")]) == ["optimizer"]
    three = [cell("adam", "1e-3", "/a"), cell("sgd", "1e-2", "/b"), cell("sgd", "1e-1", "/c")]
    assert varying_keys(three) == ["optimizer", "optimizer.lr"]


def test_a_key_given_on_the_command_line_names_rows_before_its_interpolations() -> None:
    def cell(epochs: str) -> CellRun:
        tags = {"choice.model": "fus2net", "override.trainer.max_epochs": epochs}
        params = {"scheduler.max_epochs": epochs, "trainer.max_epochs": epochs}
        return CellRun(SimpleNamespace(data=SimpleNamespace(tags=tags, params=params)))

    assert varying_keys([cell("30"), cell("20")]) == ["trainer.max_epochs"]


def test_two_keys_set_by_hand_both_name_the_rows_even_where_one_would_tell_them_apart() -> None:
    """The recipe (label smoothing 0.0, 20 epochs, its preset's values) against the former one
    (0.1 and 30 given on the command line): a row named by label smoothing alone hides that the
    epochs differ too."""

    def cell(smoothing: str, epochs: str, given: bool) -> CellRun:
        tags = {"choice.experiment": "improved"}
        if given:
            tags |= {
                "override.regularization.label_smoothing": smoothing,
                "override.trainer.max_epochs": epochs,
            }
        params = {
            "regularization.label_smoothing": smoothing,
            "scheduler.max_epochs": epochs,
            "trainer.max_epochs": epochs,
        }
        return CellRun(SimpleNamespace(data=SimpleNamespace(tags=tags, params=params)))

    cells = [cell("0.0", "20", given=False), cell("0.1", "30", given=True)]
    assert varying_keys(cells) == ["regularization.label_smoothing", "trainer.max_epochs"]
    plain = [cell("0.0", "20", given=False), cell("0.1", "30", given=False)]
    assert varying_keys(plain) == ["regularization.label_smoothing"]  # the fewest, as before


def test_a_cell_trained_before_a_key_existed_is_named_by_its_former_value() -> None:
    def cell(**params: str) -> CellRun:
        data = SimpleNamespace(tags={"choice.model": "fus2net"}, params=params)
        return CellRun(SimpleNamespace(data=data))

    older = cell(**{"optimizer.lr": "1e-3"})
    hflip = cell(**{"optimizer.lr": "1e-3", "evaluation.tta": "hflip"})
    keys, settings = variant_settings([older, hflip])
    assert keys == ["evaluation.tta"]
    assert settings == [{"evaluation.tta": "none"}, {"evaluation.tta": "hflip"}]  # not "-"


def test_a_preset_names_rows_only_where_nothing_else_tells_them_apart() -> None:
    def cell(experiment: str, model: str, lr: str = "1e-3") -> CellRun:
        tags = {"choice.experiment": experiment, "choice.model": model}
        data = SimpleNamespace(tags=tags, params={"model.name": model, "optimizer.lr": lr})
        return CellRun(SimpleNamespace(data=data))

    # Table 3: the Fus2Net cell was found finished, trained first by Table 2's preset
    table3 = [cell("table2", "fus2net"), cell("table3", "googlenet"), cell("table3", "resnet18")]
    assert varying_keys(table3) == ["model"]
    assert varying_keys([cell("a", "fus2net"), cell("b", "fus2net", "1e-2")]) == ["optimizer.lr"]
    assert varying_keys([cell("a", "fus2net"), cell("b", "fus2net")]) == ["experiment"]


def test_cli_writes_report_and_logs_a_comparison_run(store, tmp_path: Path, capsys) -> None:
    tracker, ids = store
    out = tmp_path / "report"
    uri = tracker.uri
    compare_main(["--tracking-uri", uri, "--out", str(out), "--bootstrap", "200"])
    printed = capsys.readouterr().out
    assert "optimizer=sgd" in printed and str(out / "report.html") in printed
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "<script" not in html and 'src="http' not in html  # self-contained
    assert "FAILED" in html and "Holm" in html and "not corrected" not in html
    runs = tracker.search_all_runs("tags.`fus2net.role` = 'comparison'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    logged = {a.path for a in tracker.client.list_artifacts(runs[0].info.run_id)}
    assert {"report.html", "table.md", "table.csv", "roc.png", "metrics.png", "folds.png"} <= logged
    # the comparison run is never read back as a cell
    assert [c.run_id for c in read_sweep(tracker).cells] == [ids["adam"], ids["sgd"]]


def test_cli_reads_the_training_store_by_default_and_shows_logged_operating_points(
    store, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker, _ = store
    home = Path(tracker.uri.removeprefix("sqlite:///")).parents[1]  # <home>/mlruns/mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("FUS2NET_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # not where the store is
    out = tmp_path / "report"
    compare_main(["--out", str(out), "--bootstrap", "200", "--no-log", "--operating-points"])
    printed = capsys.readouterr().out
    assert "optimizer=sgd" in printed and "operating/sens95_threshold" in printed
    assert not (tmp_path / "mlruns").exists()
    assert without_credentials("http://ci:s3cret@host:5000/x") == "http://host:5000/x"
    assert without_credentials("sqlite:///a/b.db") == "sqlite:///a/b.db"


def test_cli_errors_are_one_clear_line(tmp_path: Path, store, capsys) -> None:
    tracker, _ = store
    with pytest.raises(SystemExit) as exit_info:
        compare_main(["--tracking-uri", f"sqlite:///{tmp_path}/nowhere/mlflow.db"])
    assert exit_info.value.code == 2
    assert "no tracking store" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()  # a reader creates nothing
    with pytest.raises(SystemExit):
        compare_main(["--tracking-uri", tracker.uri, "--experiment", "typo"])
    assert "it has: Default, fus2net" in capsys.readouterr().err
    with pytest.raises(TrackingError, match="not found"):
        MlflowTracker.open_existing(tracker.uri, "typo")


def test_odd_cells_go_to_not_compared_with_their_reason(tmp_path: Path, capsys) -> None:
    """A cell whose `cv.folds` param is 2.5 (logged before configs were validated) and one whose
    predictions.csv is gone are listed with the reason; the others are still compared."""
    tracker = MlflowTracker(
        f"sqlite:///{tmp_path}/mlruns/mlflow.db", "fus2net", str(tmp_path / "mlruns/artifacts")
    )
    log_cell(tracker, tmp_path, "adam")
    log_cell(tracker, tmp_path, "sgd")
    odd = log_cell(tracker, tmp_path, "rmsprop", extra_params={"cv.folds": 2.5})
    lost = log_cell(tracker, tmp_path, "rmsprop", key="k-lost", extra_params={"seed": 7})
    (stored,) = [
        p for p in (tmp_path / "mlruns/artifacts").rglob("predictions.csv") if lost in str(p)
    ]
    stored.unlink()
    compare_main(["--tracking-uri", tracker.uri, "--out", str(tmp_path / "report"),
                  "--bootstrap", "200", "--no-log"])  # fmt: skip
    printed = capsys.readouterr().out
    assert re.search(r"optimizer=adam +2 ", printed) and re.search(r"optimizer=sgd +2 ", printed)
    lines = {run: [line for line in printed.splitlines() if run in line] for run in (odd, lost)}
    assert "UNREADABLE" in lines[odd][0]
    assert "its cv.folds param is '2.5', not a whole number of folds" in lines[odd][0]
    assert "UNREADABLE" in lines[lost][0] and "cannot be read back" in lines[lost][0]


@pytest.mark.slow
def test_real_tiny_sweep_compares_from_the_readme_command(tmp_path: Path) -> None:
    train = run_train(["-m", "optimizer=adam,sgd", *TINY], tmp_path, timeout=600)
    assert train.returncode == 0, train.stdout + train.stderr
    compare = run_module("fus2net.cli.compare", ["--bootstrap", "500"], tmp_path, timeout=300)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    assert "optimizer=adam" in compare.stdout and "optimizer=sgd" in compare.stdout
    assert "reference" in compare.stdout and "p DeLong" in compare.stdout
    reports = list((tmp_path / "outputs" / "compare").glob("*/report.html"))
    assert len(reports) == 1 and "data:image/png;base64," in reports[0].read_text()
    table = pd.read_csv(reports[0].parent / "table.csv")
    assert list(table["variant"]) == ["optimizer=adam", "optimizer=sgd"]
    assert table["test_n"].tolist() == [18, 18]


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> MlflowTracker:
    """Three variants, so two comparisons against the reference per test (Holm's family), with
    class names logged and rmsprop trained at another image size."""
    tmp = tmp_path_factory.mktemp("family")
    tracker = MlflowTracker(
        f"sqlite:///{tmp}/mlruns/mlflow.db", "fus2net", str(tmp / "mlruns/artifacts")
    )
    for optimizer in ("adam", "sgd", "rmsprop"):
        params = {"dataset.classes": '["benign", "malignant"]'}
        if optimizer == "rmsprop":
            params["data.image_size"] = 96
        log_cell(tracker, tmp, optimizer, extra_params=params)
    return tracker


def test_holm_adjusts_each_test_over_the_comparisons_and_verdicts_follow(
    family: MlflowTracker, tmp_path: Path
) -> None:
    comparison = build_comparison(family, read_sweep(family), tmp_path / "dl", n_boot=200)
    adam, sgd, rms = comparison.variants
    assert adam.contrast is None and comparison.reference == "optimizer=adam"
    # McNemar by hand: rmsprop (every image called malignant) is right alone on 1 image, adam
    # on 4: p = 2 * P(X <= 1 | 5, 1/2) = 0.375; sgd 2:0, p = 0.5. Holm: 2 * 0.375 = 0.75 for
    # the smaller, max(0.75, 1 * 0.5) for the larger.
    mc = rms.contrast.test_accuracy
    assert (mc.only_a_correct, mc.only_b_correct) == (1, 4)
    assert mc.p_value == pytest.approx(0.375)
    assert rms.contrast.holm["test_accuracy"] == pytest.approx(0.75)
    assert sgd.contrast.holm["test_accuracy"] == pytest.approx(0.75)
    # DeLong on the test set: rmsprop's constant score (AUC 0.5) against 0.92 is the smaller p
    p_sgd = delong_test(TEST_LABELS, TEST_PROBS["sgd"], TEST_PROBS["adam"]).p_value
    p_rms = delong_test(TEST_LABELS, TEST_PROBS["rmsprop"], TEST_PROBS["adam"]).p_value
    assert p_rms < p_sgd
    assert rms.contrast.holm["test_auc"] == pytest.approx(2 * p_rms)
    assert sgd.contrast.holm["test_auc"] == pytest.approx(max(2 * p_rms, p_sgd))
    oof = [v.contrast.oof_auc.p_value for v in (sgd, rms)]
    assert [sgd.contrast.holm["oof_auc"], rms.contrast.holm["oof_auc"]] == pytest.approx(holm(oof))

    text = format_text(comparison)
    header = next(
        line for line in text.splitlines() if line.startswith("variant  ") and "Holm" in line
    )
    for column in ("p DeLong test", "Holm test", "p DeLong OOF", "Holm OOF", "Holm McNemar"):
        assert column in header, column
    assert re.search(r"optimizer=rmsprop .* 0\.375 \(1:4\) +0\.750$", text, re.M)
    assert (
        f"optimizer=sgd vs optimizer=adam: test AUC +0.080 (DeLong p {p_sgd:.3f}, Holm "
        f"{max(2 * p_rms, p_sgd):.3f}): no evidence of a difference; out-of-fold AUC" in text
    )
    assert (
        "optimizer=rmsprop vs optimizer=adam: test AUC -0.420 (DeLong p <0.001, Holm <0.001): "
        "lower than the reference; " in text
    )
    assert (
        "test accuracy -30.00 points (McNemar p 0.375, Holm 0.750): no evidence of a difference"
        in text
    )
    markdown = format_markdown(comparison, "t")
    contrast_header = next(
        line for line in markdown.splitlines() if line.startswith("| variant | ΔAUC")
    )
    cells = contrast_header.strip("| ").split(" | ")
    assert len(cells) == len(set(cells)) == len(CONTRAST_COLUMNS)  # test and OOF told apart
    assert "- optimizer=rmsprop vs optimizer=adam: test AUC -0.420" in markdown
    frame = table_frame(comparison).set_index("variant")
    assert frame.loc["optimizer=sgd", "p_holm_mcnemar_test"] == pytest.approx(0.75)
    assert frame.loc["optimizer=rmsprop", "p_holm_delong_test"] == pytest.approx(2 * p_rms)
    assert frame.loc["optimizer=rmsprop", "verdict"].startswith("optimizer=rmsprop vs ")


def test_verdict_wording_for_each_outcome() -> None:
    def delong(difference: float, p: float) -> DelongResult:
        return DelongResult(0.5 + difference, 0.5, 0.1, difference / 0.1, p, 10, 10)

    def line(test_auc: DelongResult | None, holm_p: float) -> str:
        c = Contrast(test_auc, None, None, holm={"test_auc": holm_p})
        return verdict(SimpleNamespace(label="b", contrast=c), "a", 0.05)

    assert "test AUC +0.100 (DeLong p 0.010, Holm 0.020): higher than the reference" in line(
        delong(0.1, 0.01), 0.02
    )
    assert "no evidence of a difference after Holm (unadjusted p < 0.05)" in line(
        delong(-0.1, 0.03), 0.06
    )
    assert "untestable" in line(delong(0.2, math.nan), math.nan)
    tested_nothing = line(None, math.nan)
    assert tested_nothing.startswith("b vs a: test AUC not tested")
    assert "out-of-fold AUC not tested" in tested_nothing


def test_report_states_what_the_variants_share(
    family: MlflowTracker, store, tmp_path: Path
) -> None:
    comparison = build_comparison(family, read_sweep(family), tmp_path / "dl", n_boot=200)
    facts = {f.name: f for f in comparison.facts}
    assert facts["dataset"].shared and not facts["image size (px)"].shared
    text = format_text(comparison)
    glance, shared = text.split("\n\n")[:2]  # the paragraph at a glance comes first
    assert glance.startswith("Best on the primary metric") and shared.startswith(
        "What the variants share"
    )
    assert "  dataset: synthetic\n" in shared
    assert f"  dataset fingerprint: {'f' * 64}\n" in shared
    assert "  test set: 10 images: 5 benign (label 0), 5 malignant (label 1)" in shared
    assert "  training pool (out-of-fold): 20 images: 10 benign (label 0), 10 malignant" in shared
    assert "  model: fus2net\n" in shared and "  folds: 2" in shared
    assert (
        "  image size (px): differs: 80 (optimizer=adam, optimizer=sgd); 96 (optimizer=rmsprop)"
        in shared
    )
    assert "epochs" not in shared  # not logged by these cells: not made up
    html = render_html(comparison, {}, "t")
    assert html.index("<h2>What the variants share</h2>") < html.index("<h2>Cross-validation")
    assert '<td class="differs">differs: 80 (optimizer=adam' in html
    markdown = format_markdown(comparison, "t")
    assert "## What the variants share" in markdown and "- folds: 2" in markdown
    # without class names in the config, labels are named by number
    tracker, _ = store
    plain = build_comparison(tracker, read_sweep(tracker), tmp_path / "dl2", n_boot=200)
    assert "test set: 10 images: 5 label 0 (negative), 5 label 1 (positive)" in format_text(plain)


def test_best_value_of_each_column_is_marked_in_every_format(store, tmp_path: Path) -> None:
    tracker, _ = store
    comparison = build_comparison(tracker, read_sweep(tracker), tmp_path / "dl", n_boot=200)
    text = format_text(comparison)
    cv_adam = next(line for line in text.splitlines() if line.startswith("optimizer=adam   "))
    cv_sgd = next(line for line in text.splitlines() if line.startswith("optimizer=sgd    "))
    assert "90.00 ± 7.07*" in cv_sgd and "*" not in cv_adam  # sgd's folds: 0.85, 0.95
    assert "* best in its column" in text
    test_sgd = [line for line in text.splitlines() if line.startswith("optimizer=sgd ")][1]
    assert re.search(r"1\.000 \[1\.000, 1\.000\]\*$", test_sgd)  # AUC 1 against 0.92
    markdown = format_markdown(comparison, "t")
    assert "**90.00 ± 7.07**" in markdown and "**80.00" not in markdown
    html = render_html(comparison, {}, "t")
    assert '<td class="best">90.00 ± 7.07</td>' in html
    assert '<td class="best">80.00' not in html


def test_best_rows_compare_what_is_printed() -> None:
    assert best_rows("accuracy", [0.8, 0.9, 0.9]) == {1, 2}  # ties all marked
    assert best_rows("accuracy", [0.5, 0.5]) == set()  # all tie: nothing to point at
    assert best_rows("auc", [0.12344, 0.12341]) == set()  # both print 0.123
    assert best_rows("auc", [0.7, None, math.nan, 0.6]) == {0}
    assert best_rows("auc", [0.7]) == set()  # one variant has no rival


def test_degenerate_bootstrap_intervals_become_exact_with_a_note(store, tmp_path: Path) -> None:
    tracker, _ = store
    comparison = build_comparison(tracker, read_sweep(tracker), tmp_path / "dl", n_boot=200)
    adam, sgd = comparison.variants
    # five positives: every proportion has fewer than 5 successes or failures
    assert set(sgd.test_exact) == set(adam.test_exact) == set(METRICS) - {"auc"}
    low, high = proportion_interval(4, 5)  # adam's sensitivity
    assert adam.test_ci["sensitivity"] == pytest.approx((low, high))
    text = format_text(comparison)
    assert f"80.00 [{100 * low:.2f}, {100 * high:.2f}]†" in text
    assert "† exact binomial CI, see notes]" in text
    markdown = format_markdown(comparison, "t")
    assert "- † Exact (Clopper-Pearson) 95% interval of the count" in markdown
    assert "optimizer=adam: accuracy 8/10, sensitivity 4/5, specificity 4/5, precision 4/5" in (
        markdown
    )
    assert "A zero-width AUC interval (optimizer=sgd)" in markdown
    frame = table_frame(comparison).query("status == 'compared'").set_index("variant")
    assert frame.loc["optimizer=adam", "test_sensitivity_ci"] == "exact"
    assert frame.loc["optimizer=adam", "test_auc_ci"] == "bootstrap"
    assert frame.loc["optimizer=adam", ["test_positive", "test_negative"]].tolist() == [5, 5]


def fake_comparison(folds: list[dict[int, dict[str, float]]], names: list[tuple[str, ...]],
                    keys: list[str]) -> Comparison:  # fmt: skip
    """A comparison with just what the figures draw: fold metrics and variant names."""
    variants = []
    for i, (per_fold, values) in enumerate(zip(folds, names, strict=True)):
        run = SimpleNamespace(
            info=SimpleNamespace(run_id=f"run{i}", run_name=None),
            data=SimpleNamespace(tags={}, params={}),
        )
        settings = dict(zip(keys, values, strict=True))
        label = " ".join(f"{k}={v}" for k, v in settings.items())
        cv = mean_std(per_fold.values())
        variants.append(
            VariantResult(label, settings, CellRun(run, per_fold), pd.DataFrame(), cv, {}, {}, {})
        )
    return Comparison(variants, variants[0].label, keys, [], {}, 200, 0.95, False)


def test_error_bars_stay_inside_the_axis() -> None:
    from matplotlib.container import ErrorbarContainer

    cut = whiskers(np.array([0.6, 0.05]), np.array([0.55, 0.1]))  # rows: below, above
    np.testing.assert_allclose(cut, [[0.55, 0.05], [0.4, 0.1]])  # cut at 1 and at 0
    spread = [{0: dict.fromkeys(METRICS, 0.05), 1: dict.fromkeys(METRICS, 1.0)}]  # sd 0.67
    steady = [{0: dict.fromkeys(METRICS, 0.5), 1: dict.fromkeys(METRICS, 0.6)}]
    comparison = fake_comparison(spread + steady, [("adam",), ("sgd",)], ["optimizer"])
    ax = metric_bars_figure(comparison).axes[0]
    low, high = ax.get_ylim()
    tops = []
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            _, caps, bars = container.lines
            ys = np.concatenate([seg[:, 1] for coll in bars for seg in coll.get_segments()])
            ys = np.concatenate([ys, *[cap.get_ydata() for cap in caps]])
            assert low < ys.min() and ys.max() < high
            tops.append(ys.max())
    assert max(tops) == pytest.approx(1.0)  # the spread variant's whisker ends at the range


def test_per_fold_labels_do_not_overlap_with_ten_folds_and_long_names() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rng = np.random.default_rng(0)
    names = [
        ("l2_dropout", "efficientnet_b0", "0.0001"),
        ("none", "densenet121", "0.001"),
        ("l2_dropout", "fus2net", "0.01"),
        ("none", "googlenet", "0.0001"),
        ("l2_dropout", "resnet18", "0.1"),
        ("none", "fus2net", "0.001"),
    ]
    folds = [{f: {m: float(rng.uniform(0, 1)) for m in METRICS} for f in range(10)} for _ in names]
    keys = ["regularization", "model", "optimizer.lr"]
    fig = fold_spread_figure(fake_comparison(folds, names, keys))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ticks = [t for t in fig.axes[0].get_yticklabels() if t.get_text()]
    assert len(ticks) == len(names)
    for tick in ticks:  # short (values only, the keys are the axis title) and wrapped
        assert all(len(line) <= LABEL_WIDTH for line in tick.get_text().split("\n"))
    assert fig.axes[0].get_ylabel() == "regularization, model, optimizer.lr"
    xticks = [t for ax in fig.axes for t in ax.get_xticklabels() if t.get_text()]
    widest = max(t.get_window_extent(renderer).width for t in ticks)
    assert widest < 0.12 * fig.bbox.width  # names do not squeeze the panels
    for group in (ticks, xticks):
        boxes = [t.get_window_extent(renderer) for t in group]
        for i, box in enumerate(boxes):
            assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)
            for other in boxes[i + 1 :]:
                assert not box.overlaps(other), (box, other)


def test_a_change_inside_a_list_of_transforms_names_the_element_not_the_list() -> None:
    """`augmentation.transforms.0.scale=[0.9,1.1],[0.75,1.33]` is logged as the whole list
    (one JSON param); the rows are named by the element's key that changed."""

    def cell(scale: list[float], given: bool) -> CellRun:
        transforms = [
            {"_target_": "albumentations.Affine", "scale": scale, "p": 0.7},
            {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
        ]
        params = {"augmentation._target_": "albumentations.Compose"}
        params["augmentation.transforms"] = json.dumps(transforms)
        tags = {"choice.augmentation": "ultrasound"}
        if given:
            tags["override.augmentation.transforms.0.scale"] = json.dumps(scale)
        return CellRun(SimpleNamespace(data=SimpleNamespace(tags=tags, params=params)))

    cells = [cell([0.9, 1.1], given=True), cell([0.75, 1.33], given=True)]
    keys, settings = variant_settings(cells)
    assert keys == ["augmentation.transforms.0.scale"]
    assert settings == [
        {"augmentation.transforms.0.scale": "[0.9, 1.1]"},
        {"augmentation.transforms.0.scale": "[0.75, 1.33]"},
    ]
    by = ["augmentation.transforms.0.scale", "augmentation.transforms.1.p"]
    assert variant_settings(cells, by=by)[1][1] == {
        "augmentation.transforms.0.scale": "[0.75, 1.33]",
        "augmentation.transforms.1.p": "0.5",
    }
