"""The comparison as tables: terminal text, Markdown, CSV, and the notes on the statistics.

The paper's column order (accuracy, sensitivity, specificity, precision, AUC), percentages for
the threshold metrics and three decimals for AUC, as in its Tables 1-3. One list of `Section`s
feeds every format, so the terminal, the Markdown file and the HTML report cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from fus2net.evaluation.metrics import METRICS
from fus2net.reporting.compare.comparison import Comparison, VariantResult

HEADINGS = {
    "accuracy": "accuracy %",
    "sensitivity": "sensitivity %",
    "specificity": "specificity %",
    "precision": "precision %",
    "auc": "AUC",
}


@dataclass(frozen=True)
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]]


def fmt(metric: str, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if metric == "auc" else f"{100 * value:.2f}"


def fmt_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _signed(metric: str, value: float) -> str:
    text = fmt(metric, abs(value))
    return ("-" if value < 0 else "+") + text


def sections(comparison: Comparison) -> list[Section]:
    variants = comparison.variants
    cv_rows = [
        [v.label, str(v.n_folds)]
        + [f"{fmt(m, v.cv.get(m + '_mean'))} ± {fmt(m, v.cv.get(m + '_std'))}" for m in METRICS]
        for v in variants
    ]
    resampled = "patients" if comparison.grouped else "images"
    test_rows = [
        [v.label, str(len(v.split("test")))]
        + [
            f"{fmt(m, v.test[m])} [{fmt(m, v.test_ci[m][0])}, {fmt(m, v.test_ci[m][1])}]"
            for m in METRICS
        ]
        for v in variants
    ]
    found = [
        Section(
            "Cross-validation: mean ± sd over folds (each fold's validation images)",
            ["variant", "folds", *[HEADINGS[m] for m in METRICS]],
            cv_rows,
        ),
        Section(
            f"Held-out test set: value [{comparison.level:.0%} bootstrap CI, "
            f"{comparison.n_boot} resamples of {resampled}]",
            ["variant", "n", *[HEADINGS[m] for m in METRICS]],
            test_rows,
        ),
        Section(
            f"Against the reference ({comparison.reference}), paired on the same images",
            [
                "variant",
                "ΔAUC test",
                "p DeLong",
                "ΔAUC out-of-fold",
                "p DeLong",
                "Δ accuracy test",
                "p McNemar (only this:only ref. right)",
            ],
            [_contrast_row(v) for v in variants],
        ),
    ]
    if comparison.extra_metrics:
        found.append(
            Section(
                "Other metrics of the cell runs (as logged, e.g. operating points)",
                ["variant", *comparison.extra_metrics],
                [
                    [v.label]
                    + [_plain(v.cell.metrics.get(name)) for name in comparison.extra_metrics]
                    for v in variants
                ],
            )
        )
    return found


def _plain(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4g}"


def _contrast_row(v: VariantResult) -> list[str]:
    c = v.contrast
    if c is None:
        return [v.label, "reference", "", "", "", "", ""]
    row = [v.label]
    for result in (c.test_auc, c.oof_auc):
        if result is None:
            row += ["n/a", "n/a"]
        else:
            row += [_signed("auc", result.difference), fmt_p(result.p_value)]
    if c.test_accuracy is None:
        row += ["n/a", "n/a"]
    else:
        mc = c.test_accuracy
        row += [
            _signed("accuracy", (mc.only_a_correct - mc.only_b_correct) / mc.n),
            f"{fmt_p(mc.p_value)} ({mc.only_a_correct}:{mc.only_b_correct})",
        ]
    return row


def notes(comparison: Comparison) -> list[str]:
    """What each number is and what the tests do and do not claim."""
    k = len(comparison.variants) - 1
    text = [
        "Cross-validation: the paper's metrics on each fold's validation images at threshold "
        "0.5; mean ± sample standard deviation over folds. With few folds the sd is rough.",
        "Test: the held-out images, scored as the training run chose (cv.test_scoring: the "
        f"ensemble of fold models by default). Intervals: {comparison.level:.0%} percentile "
        f"bootstrap, {comparison.n_boot} resamples of "
        + ("whole patients (group ids)." if comparison.grouped else "images (no patient ids)."),
        "ΔAUC = variant − reference. p DeLong: DeLong's test for two correlated ROC curves "
        "(DeLong et al. 1988, fast algorithm of Sun & Xu 2014), two-sided, paired on the same "
        "test images; and on the pooled out-of-fold predictions (each training image scored "
        "once, by the fold model that did not train on it). Pooled AUC mixes fold models, so "
        "it is not the mean of the fold AUCs.",
        "p McNemar: exact McNemar test on the test images that exactly one of the two "
        "classifies correctly at threshold 0.5 (counts: only this variant right : only the "
        "reference right). Δ accuracy is their difference over all test images.",
        f"Multiple comparisons are not corrected: {k} variant(s) against one reference, each "
        "at its own 5 % level. For family-wise control multiply each p by the number of "
        "comparisons (Bonferroni) or use Holm's step-down.",
        "Images are treated as independent in the tests; several images of one patient would "
        "make them optimistic."
        + (" The bootstrap resamples patients." if comparison.grouped else ""),
    ]
    for v in comparison.variants:
        if v.contrast:
            text += [f"{v.label}: {n}" for n in v.contrast.notes]
    return text


def skipped_lines(comparison: Comparison) -> list[str]:
    return [f"{s.status} {s.name} (run {s.run_id}): {s.reason}" for s in comparison.skipped]


def format_text(comparison: Comparison) -> str:
    """Aligned plain-text tables for the terminal."""
    out = []
    for section in sections(comparison):
        widths = [
            max(len(str(r[i])) for r in [section.columns, *section.rows])
            for i in range(len(section.columns))
        ]

        def line(cells: list[str], widths: list[int] = widths) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join([first, *rest]).rstrip()

        out += [section.title, line(section.columns)]
        out += [line(row) for row in section.rows] + [""]
    skipped = skipped_lines(comparison)
    if skipped:
        out += ["Not compared (failed, killed, unfinished, partial or superseded):"]
        out += [f"  {s}" for s in skipped] + [""]
    return "\n".join(out)


def _escape_md(text: str) -> str:
    return text.replace("|", "\\|")


def format_markdown(comparison: Comparison, title: str) -> str:
    out = [f"# {title}", ""]
    source = comparison.source
    out += [
        f"Store `{source['store']}`, experiment `{source['experiment']}`, sweep "
        f"`{source['sweep']}`; variants named by: {', '.join(comparison.keys) or '(one cell)'}.",
        "",
    ]
    for section in sections(comparison):
        out += [f"## {section.title}", ""]
        out.append("| " + " | ".join(_escape_md(c) for c in section.columns) + " |")
        out.append("|" + "|".join([":---"] + ["---:"] * (len(section.columns) - 1)) + "|")
        out += ["| " + " | ".join(_escape_md(c) for c in row) + " |" for row in section.rows]
        out.append("")
    skipped = skipped_lines(comparison)
    out += ["## Not compared", ""] + ([f"- {s}" for s in skipped] or ["- none"]) + [""]
    out += ["## Notes on the statistics", ""] + [f"- {n}" for n in notes(comparison)] + [""]
    return "\n".join(out)


def table_frame(comparison: Comparison) -> pd.DataFrame:
    """Every number of the comparison, unformatted, one row per cell (skipped cells too)."""
    rows = []
    for v in comparison.variants:
        row: dict[str, object] = {"variant": v.label, "status": "compared", "run_id": v.cell.run_id}
        row.update(v.settings)
        row["n_folds"] = v.n_folds
        row.update({f"cv_{k}": val for k, val in v.cv.items()})
        row["test_n"] = len(v.split("test"))
        for m in METRICS:
            row[f"test_{m}"] = v.test[m]
            row[f"test_{m}_low"], row[f"test_{m}_high"] = v.test_ci[m]
        row.update({f"oof_{m}": v.oof[m] for m in METRICS})
        row.update({name: v.cell.metrics.get(name) for name in comparison.extra_metrics})
        row["reference"] = v.contrast is None
        c = v.contrast
        if c is not None:
            for name, result in (("test", c.test_auc), ("oof", c.oof_auc)):
                if result is not None:
                    row[f"delta_auc_{name}"] = result.difference
                    row[f"p_delong_{name}"] = result.p_value
            if c.test_accuracy is not None:
                row["mcnemar_only_variant_right"] = c.test_accuracy.only_a_correct
                row["mcnemar_only_reference_right"] = c.test_accuracy.only_b_correct
                row["p_mcnemar_test"] = c.test_accuracy.p_value
        rows.append(row)
    for s in comparison.skipped:
        rows.append({"variant": s.name, "status": s.status, "run_id": s.run_id, "reason": s.reason})
    return pd.DataFrame(rows)
