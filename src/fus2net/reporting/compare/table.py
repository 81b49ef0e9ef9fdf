"""The comparison as tables: terminal text, Markdown, CSV, and the notes on the statistics.

The paper's column order (accuracy, sensitivity, specificity, precision, AUC), percentages for
the threshold metrics and three decimals for AUC, as in its Tables 1-3. One list of `Section`s
feeds every format, so the terminal, the Markdown file and the HTML report cannot disagree: the
same best-value marks, verdicts, notes and the same statement of what the variants share.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from fus2net.evaluation.metrics import METRICS
from fus2net.evaluation.stats import MIN_COUNT, DelongResult, McNemarResult, delong_interval
from fus2net.reporting.compare.comparison import (
    THRESHOLD,
    Comparison,
    Contrast,
    Fact,
    VariantResult,
    class_names_of,
)

HEADINGS = {
    "accuracy": "accuracy %",
    "sensitivity": "sensitivity %",
    "specificity": "specificity %",
    "precision": "precision %",
    "auc": "AUC",
}


EXACT_MARK = "†"  # after an exact interval that replaced a degenerate bootstrap one
BEST_MARK = "*"  # after the best value of a column, in plain text (bold in Markdown and HTML)
BEST_LEGEND = "best in its column (not a test)"


@dataclass(frozen=True)
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]]
    best: frozenset[tuple[int, int]] = frozenset()  # (row, column) of each column's best value
    footer: list[str] = field(default_factory=list)  # lines under the table (e.g. verdicts)
    footer_title: str = ""


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


def best_rows(metric: str, values: Sequence[float | None]) -> set[int]:
    """Rows holding a column's highest value as printed (ties all), none when all tie.

    Every metric of the tables is better higher. Compared after rounding, so that two rows
    showing the same number are never told apart by digits the reader cannot see.
    """
    shown = {i: float(fmt(metric, v)) for i, v in enumerate(values) if fmt(metric, v) != "n/a"}
    if len(shown) < 2 or len(set(shown.values())) == 1:
        return set()
    top = max(shown.values())
    return {i for i, value in shown.items() if value == top}


def _best_cells(values: dict[str, list[float | None]], first_column: int) -> frozenset:
    return frozenset(
        (row, first_column + j) for j, m in enumerate(METRICS) for row in best_rows(m, values[m])
    )


def _test_cell(v: VariantResult, m: str) -> str:
    low, high = v.test_ci[m]
    mark = EXACT_MARK if m in v.test_exact else ""
    return f"{fmt(m, v.test[m])} [{fmt(m, low)}, {fmt(m, high)}]{mark}"


CONTRAST_COLUMNS = [
    "variant",
    "ΔAUC test",
    "95% CI test",
    "p DeLong test",
    "Holm test",
    "ΔAUC OOF",
    "95% CI OOF",
    "p DeLong OOF",
    "Holm OOF",
    "Δ accuracy test",
    "p McNemar test (this:ref. right)",
    "Holm McNemar",
]


def contrast_columns(level: float) -> list[str]:
    """CONTRAST_COLUMNS with the intervals' coverage as `--level` sets it."""
    return [c.replace("95% CI", f"{level:.0%} CI") for c in CONTRAST_COLUMNS]


# A variant whose test sensitivity or specificity at the threshold is below this calls (nearly)
# every image one class: its AUC may still be high (a ranking), but it is no classifier there.
DEGENERATE_BELOW = 0.10


def degenerate(v: VariantResult) -> str | None:
    """Why `v` is degenerate at the threshold (test sensitivity or specificity below 10 %), in
    words that name the classes; None when it is not (or the test set cannot tell)."""
    names = class_names_of(v.cell) or ["label 0", "label 1"]
    found = []
    for metric, truth, called in (
        ("sensitivity", names[1], names[0]),
        ("specificity", names[0], names[1]),
    ):
        value = v.test.get(metric, math.nan)
        if not math.isnan(value) and value < DEGENERATE_BELOW:
            found.append(
                f"test {metric} {fmt(metric, value)} %: (nearly) every {truth} image is called "
                f"{called}"
            )
    if not found:
        return None
    return (
        f"{v.label} is degenerate at threshold {THRESHOLD:g} ({'; '.join(found)}); read its AUC "
        "as a ranking of the images only, not as a classifier that works at this threshold"
    )


def sections(comparison: Comparison) -> list[Section]:
    variants = comparison.variants
    warnings = [w for w in (degenerate(v) for v in variants) if w]
    cv_rows = [
        [v.label, str(v.n_folds)]
        + [f"{fmt(m, v.cv.get(m + '_mean'))} ± {fmt(m, v.cv.get(m + '_std'))}" for m in METRICS]
        for v in variants
    ]
    resampled = "patients" if comparison.grouped else "images"
    test_rows = [
        [v.label, str(len(v.split("test")))] + [_test_cell(v, m) for m in METRICS] for v in variants
    ]
    exact = any(v.test_exact for v in variants)
    found = [
        Section(
            "Cross-validation: mean ± sd over folds (each fold's validation images)",
            ["variant", "folds", *[HEADINGS[m] for m in METRICS]],
            cv_rows,
            _best_cells({m: [v.cv.get(m + "_mean") for v in variants] for m in METRICS}, 2),
        ),
        Section(
            f"Held-out test set: value [{comparison.level:.0%} bootstrap CI, "
            f"{comparison.n_boot} resamples of {resampled}"
            + (f"; {EXACT_MARK} exact binomial CI, see notes]" if exact else "]"),
            ["variant", "n", *[HEADINGS[m] for m in METRICS]],
            test_rows,
            _best_cells({m: [v.test[m] for v in variants] for m in METRICS}, 2),
            footer=warnings,
            footer_title=(
                f"Warning: degenerate at threshold {THRESHOLD:g} (test sensitivity or "
                f"specificity below {DEGENERATE_BELOW:.0%})"
                if warnings
                else ""
            ),
        ),
        Section(
            f"Against the reference ({comparison.reference}), paired on the same images "
            "(test: held-out test set; OOF: pooled out-of-fold predictions; Holm: adjusted p)",
            contrast_columns(comparison.level),
            [_contrast_row(v, comparison.level) for v in variants],
            footer=verdicts(comparison),
            footer_title=f"Verdicts (a difference where the Holm p < {comparison.alpha:g})",
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


def _accuracy_difference(mc: McNemarResult) -> float:
    return (mc.only_a_correct - mc.only_b_correct) / mc.n


def auc_interval(result: DelongResult, level: float) -> str:
    """`[low, high]` of a ΔAUC, signed as the difference is."""
    low, high = delong_interval(result, level)
    return f"[{_signed('auc', low)}, {_signed('auc', high)}]"


def _contrast_row(v: VariantResult, level: float = 0.95) -> list[str]:
    c = v.contrast
    if c is None:
        return [v.label, "reference"] + [""] * (len(CONTRAST_COLUMNS) - 2)
    row = [v.label]
    for kind, result in (("test_auc", c.test_auc), ("oof_auc", c.oof_auc)):
        if result is None:
            row += ["n/a", "n/a", "n/a", "n/a"]
        else:
            row += [_signed("auc", result.difference), auc_interval(result, level)]
            row += [fmt_p(result.p_value), fmt_p(c.holm.get(kind))]
    if c.test_accuracy is None:
        row += ["n/a", "n/a", "n/a"]
    else:
        mc = c.test_accuracy
        row += [
            _signed("accuracy", _accuracy_difference(mc)),
            f"{fmt_p(mc.p_value)} ({mc.only_a_correct}:{mc.only_b_correct})",
            fmt_p(c.holm.get("test_accuracy")),
        ]
    return row


def _judgement(difference: float, p: float, p_holm: float | None, alpha: float) -> str:
    """What one test says, decided on the Holm-adjusted p (family-wise error at `alpha`)."""
    if math.isnan(p):
        return "untestable (the difference has no variance)"
    if p_holm is not None and p_holm < alpha:
        return "higher than the reference" if difference > 0 else "lower than the reference"
    if p < alpha:
        return f"no evidence of a difference after Holm (unadjusted p < {alpha:g})"
    return "no evidence of a difference"


def _clause(
    what: str,
    test: str,
    shown: str,
    result: DelongResult | McNemarResult | None,
    difference: float,
    p_holm: float | None,
    alpha: float,
) -> str:
    """`<what> <difference> (<test> p .., Holm ..): <judgement>`, one part of a verdict."""
    if result is None:
        return f"{what} not tested (fewer than 2 images of a class in common)"
    p = f"{test} p {fmt_p(result.p_value)}, Holm {fmt_p(p_holm)}"
    return f"{what} {shown} ({p}): {_judgement(difference, result.p_value, p_holm, alpha)}"


def verdict(v: VariantResult, reference: str, alpha: float) -> str:
    """One line per comparison: the difference, raw and Holm-adjusted p, and what they mean."""
    c: Contrast | None = v.contrast
    if c is None:
        return f"{v.label}: the reference"
    clauses = []
    for kind, what, result in (
        ("test_auc", "test AUC", c.test_auc),
        ("oof_auc", "out-of-fold AUC", c.oof_auc),
    ):
        diff = result.difference if result is not None else math.nan
        shown = _signed("auc", diff) if result is not None else ""
        clauses.append(_clause(what, "DeLong", shown, result, diff, c.holm.get(kind), alpha))
    mc = c.test_accuracy
    diff = _accuracy_difference(mc) if mc is not None else math.nan
    shown = f"{_signed('accuracy', diff)} points" if mc is not None else ""
    p_holm = c.holm.get("test_accuracy")
    clauses.append(_clause("test accuracy", "McNemar", shown, mc, diff, p_holm, alpha))
    return f"{v.label} vs {reference}: " + "; ".join(clauses)


def verdicts(comparison: Comparison) -> list[str]:
    return [
        verdict(v, comparison.reference, comparison.alpha)
        for v in comparison.variants
        if v.contrast is not None
    ]


def _fact_text(fact: Fact) -> str:
    if fact.shared:
        return next(iter(fact.values.values()), "")
    groups = fact.by_value()
    return "differs: " + "; ".join(f"{value} ({', '.join(who)})" for value, who in groups.items())


def shared_lines(comparison: Comparison) -> list[tuple[str, str, bool]]:
    """(name, value, shared) of each condition of the runs; one that varies lists each value
    with its variants."""
    return [(fact.name, _fact_text(fact), fact.shared) for fact in comparison.facts]


def _primary(comparison: Comparison) -> tuple[str, dict[str, float], dict[str, str]]:
    """The metric the headline ranks by: test AUC where any variant has one, else the
    cross-validation AUC (mean over folds); with each variant's value and its shown spread."""
    test = {v.label: v.test.get("auc", math.nan) for v in comparison.variants}
    if any(not math.isnan(x) for x in test.values()):
        n = len(comparison.variants[0].split("test"))
        level = f"{comparison.level:.0%} CI "
        spread = {
            v.label: f"[{level}{fmt('auc', v.test_ci['auc'][0])}, "
            f"{fmt('auc', v.test_ci['auc'][1])}]"
            for v in comparison.variants
        }
        return f"test AUC ({n} held-out images)", test, spread
    cv = {v.label: v.cv.get("auc_mean", math.nan) for v in comparison.variants}
    spread = {v.label: f"± {fmt('auc', v.cv.get('auc_std'))} sd" for v in comparison.variants}
    return "cross-validation AUC (mean over folds; no test AUC)", cv, spread


def _best_sentence(comparison: Comparison) -> str:
    what, values, spread = _primary(comparison)
    ranked = sorted(
        (label for label in values if not math.isnan(values[label])),
        key=lambda label: -values[label],
    )
    if not ranked:
        return f"No variant has a {what.split(' (')[0]}: nothing to rank them by."
    shown = {label: fmt("auc", values[label]) for label in ranked}
    top = [label for label in ranked if shown[label] == shown[ranked[0]]]
    head = f"{shown[top[0]]} {spread[top[0]]}"
    if len(comparison.variants) == 1:
        return f"One variant ({top[0]}): {what} {head}; nothing to compare it with."
    rest = [f"{label} {shown[label]}" for label in ranked if label not in top]
    if len(top) > 1:
        best = f"{' and '.join(top)} tie for the best {what}, {shown[top[0]]}"
    else:
        best = f"Best on the primary metric, {what}: {top[0]}, {head}"
    return best + (f" (then {', '.join(rest)})." if rest else ".")


def _evidence_sentence(comparison: Comparison) -> str:
    """What the Holm-adjusted verdicts found, in one sentence."""
    if len(comparison.variants) == 1:
        return ""
    found = []
    for v in comparison.variants:
        c = v.contrast
        if c is None:
            continue
        for kind, what in (
            ("test_auc", "test AUC"),
            ("oof_auc", "out-of-fold AUC"),
            ("test_accuracy", "test accuracy"),
        ):
            result = c.result(kind)
            p_holm = c.holm.get(kind, math.nan)
            if result is None or math.isnan(p_holm) or p_holm >= comparison.alpha:
                continue
            if isinstance(result, DelongResult):
                diff = result.difference
                shown = f"{_signed('auc', diff)}, {comparison.level:.0%} CI "
                shown += auc_interval(result, comparison.level)
            else:
                diff = _accuracy_difference(result)
                shown = f"{_signed('accuracy', diff)} points"
            side = "higher" if diff > 0 else "lower"
            found.append(f"{v.label} has a {side} {what} ({shown}; Holm p {fmt_p(p_holm)})")
    ref = comparison.reference
    if not found:
        return (
            f"Nothing differs from the reference ({ref}) with evidence: no Holm-adjusted p is "
            f"below {comparison.alpha:g} for test AUC, out-of-fold AUC or test accuracy, so "
            "the ranking may be noise."
        )
    return (
        f"With evidence against the reference ({ref}), Holm-adjusted p < {comparison.alpha:g}: "
        + "; ".join(found)
        + ". No other difference from it has evidence."
    )


def glance(comparison: Comparison) -> tuple[str, list[str]]:
    """The report's first paragraph (best variant on the primary metric, what differs with
    evidence) and a warning per variant that is degenerate at the threshold, whose high AUC
    would otherwise be read as a usable classifier."""
    sentences = (_best_sentence(comparison), _evidence_sentence(comparison))
    warnings = [f"Warning: {w}." for w in (degenerate(v) for v in comparison.variants) if w]
    return " ".join(x for x in sentences if x), warnings


def pooled_auc_note(comparison: Comparison) -> str:
    """Why the cross-validation AUC column and the out-of-fold ROC legend differ, with both
    numbers of each variant."""
    pairs = "; ".join(
        f"{v.label} {fmt('auc', v.cv.get('auc_mean'))} vs {fmt('auc', v.oof.get('auc'))}"
        for v in comparison.variants
    )
    return (
        "Cross-validation AUC column vs the out-of-fold ROC curves (figure legend, ΔAUC OOF): "
        "the column is the mean of each fold's own AUC; the legend pools every fold's "
        "validation predictions into one ROC curve and computes one AUC. Pooling ranks images "
        "scored by different fold models against each other, so a fold whose scores sit higher "
        "or lower than another's moves the pooled AUC but not the mean; with few folds or few "
        f"images they also differ by chance. Mean of folds vs pooled: {pairs}."
    )


def notes(comparison: Comparison) -> list[str]:
    """What each number is and what the tests do and do not claim."""
    k = len(comparison.variants) - 1
    exact = any(v.test_exact for v in comparison.variants)
    text = [
        "Cross-validation: the paper's metrics on each fold's validation images at threshold "
        "0.5; mean ± sample standard deviation over folds. With few folds the sd is rough.",
        "Test: the held-out images, scored as the training run chose (cv.test_scoring: the "
        f"ensemble of fold models by default). Intervals: {comparison.level:.0%} percentile "
        f"bootstrap, {comparison.n_boot} resamples of "
        + ("whole patients (group ids)" if comparison.grouped else "images (no patient ids)")
        + (f", except where marked {EXACT_MARK} (below)." if exact else "."),
        "ΔAUC = variant − reference. p DeLong: DeLong's test for two correlated ROC curves "
        "(DeLong et al. 1988, fast algorithm of Sun & Xu 2014), two-sided, paired on the same "
        "test images (p DeLong test); and on the pooled out-of-fold predictions (p DeLong OOF: "
        "each training image scored once, by the fold model that did not train on it). Pooled "
        "AUC mixes fold models, so it is not the mean of the fold AUCs. ΔAUC's interval: "
        f"{comparison.level:.0%} Wald interval from DeLong's paired standard error (it holds 0 "
        "exactly when the unadjusted p is above the level; not Holm-adjusted).",
        pooled_auc_note(comparison),
        "p McNemar: exact McNemar test on the test images that exactly one of the two "
        "classifies correctly at threshold 0.5 (this:ref. right = the counts of images only "
        "this variant and only the reference got right). Δ accuracy is their difference over "
        "all test images, in percentage points.",
        f"Multiple comparisons: Holm's step-down adjustment (Holm 1979) over the {k} "
        "comparison(s) against the reference, separately for each test (test DeLong, "
        "out-of-fold DeLong, McNemar), keeps the chance of one or more false 'higher'/'lower' "
        f"verdicts at most {comparison.alpha:g} per test; the raw p beside it is each "
        f"comparison alone. The verdicts decide on the Holm p at {comparison.alpha:g}; 'no "
        "evidence of a difference' is not evidence that the variants are equal.",
        "Images are treated as independent in the tests; several images of one patient would "
        "make them optimistic."
        + (" The bootstrap resamples patients." if comparison.grouped else ""),
    ]
    if k:
        text.append(
            f"Best values ({BEST_MARK} in text, bold in Markdown and HTML): the highest mean "
            "(cross-validation) or point value (test) of each metric column, as printed; ties "
            "are all marked, and none when every variant ties. Being best is not being "
            "significantly better: read the tests."
        )
    text += _exact_notes(comparison)
    for v in comparison.variants:
        if v.contrast:
            text += [f"{v.label}: {n}" for n in v.contrast.notes]
    return text


def _exact_notes(comparison: Comparison) -> list[str]:
    """Why some test intervals are exact ones, and where; a zero-width AUC interval, flagged."""
    out = []
    replaced = [
        f"{v.label}: " + ", ".join(f"{m} {e.successes}/{e.trials}" for m, e in v.test_exact.items())
        for v in comparison.variants
        if v.test_exact
    ]
    if replaced:
        out.append(
            f"{EXACT_MARK} Exact (Clopper-Pearson) {comparison.level:.0%} interval of the count, "
            "in place of the percentile bootstrap, for each proportion with fewer than "
            f"{MIN_COUNT} successes or failures or a zero-width bootstrap interval. There the "
            "bootstrap cannot vary (6 of 6 positives found resample to 6 of 6: '100.00 [100.00, "
            "100.00]') or covers too rarely; the exact interval covers at least as often as it "
            "says. Here: "
            + "; ".join(replaced)
            + "."
            + (" It counts images, not patients." if comparison.grouped else "")
        )
    flat = [v.label for v in comparison.variants if v.test_ci["auc"][0] == v.test_ci["auc"][1]]
    if flat:
        out.append(
            "A zero-width AUC interval (" + ", ".join(flat) + ") means every bootstrap "
            "resample ranked the classes the same way (e.g. perfectly): it is not certainty, "
            "and AUC has no exact interval to fall back on."
        )
    return out


def skipped_lines(comparison: Comparison) -> list[str]:
    return [f"{s.status} {s.name} (run {s.run_id}): {s.reason}" for s in comparison.skipped]


def format_text(comparison: Comparison) -> str:
    """Aligned plain-text tables for the terminal, after the paragraph that says it at a
    glance."""
    paragraph, warnings = glance(comparison)
    out = textwrap.wrap(paragraph, 100)
    out += [line for w in warnings for line in textwrap.wrap(w, 100, subsequent_indent="  ")]
    out += ["", "What the variants share (from their cell runs and predictions)"]
    out += [f"  {name}: {value}" for name, value, _ in shared_lines(comparison)] + [""]
    for section in sections(comparison):
        marked = [
            [c + (BEST_MARK if (i, j) in section.best else "") for j, c in enumerate(row)]
            for i, row in enumerate(section.rows)
        ]
        widths = [
            max(len(str(r[i])) for r in [section.columns, *marked])
            for i in range(len(section.columns))
        ]

        def line(cells: list[str], widths: list[int] = widths) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join([first, *rest]).rstrip()

        out += [section.title, line(section.columns)]
        out += [line(row) for row in marked]
        out += [f"{BEST_MARK} {BEST_LEGEND}"] if section.best else []
        out += [section.footer_title] if section.footer else []
        out += [f"  {line}" for line in section.footer] + [""]
    skipped = skipped_lines(comparison)
    if skipped:
        out += ["Not compared (failed, killed, unfinished, partial, incomplete or superseded):"]
        out += [f"  {s}" for s in skipped] + [""]
    return "\n".join(out)


def _escape_md(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


def format_markdown(comparison: Comparison, title: str) -> str:
    out = [f"# {title}", ""]
    source = comparison.source
    out += [
        f"Store `{source['store']}`, experiment `{source['experiment']}`, sweep "
        f"`{source['sweep']}`; variants named by: {', '.join(comparison.keys) or '(one cell)'}.",
        "",
    ]
    paragraph, warnings = glance(comparison)
    out += [_escape_md(paragraph), ""]
    for warning in warnings:  # each its own quote: consecutive lines would merge into one
        out += [f"> **{_escape_md(warning)}**", ""]
    out += ["## What the variants share", ""]
    out += [f"- {name}: {_escape_md(value)}" for name, value, _ in shared_lines(comparison)]
    out.append("")
    for section in sections(comparison):
        out += [f"## {section.title}", ""]
        out.append("| " + " | ".join(_escape_md(c) for c in section.columns) + " |")
        out.append("|" + "|".join([":---"] + ["---:"] * (len(section.columns) - 1)) + "|")
        out += [
            "| "
            + " | ".join(
                f"**{_escape_md(c)}**" if (i, j) in section.best else _escape_md(c)
                for j, c in enumerate(row)
            )
            + " |"
            for i, row in enumerate(section.rows)
        ]
        out.append("")
        out += [f"**Bold**: {BEST_LEGEND}.", ""] if section.best else []
        if section.footer:
            out += [f"**{section.footer_title}**", ""]
            out += [f"- {_escape_md(line)}" for line in section.footer] + [""]
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
            row[f"test_{m}_ci"] = "exact" if m in v.test_exact else "bootstrap"
        row["test_positive"] = int((v.split("test")["label"] == 1).sum())
        row["test_negative"] = int((v.split("test")["label"] == 0).sum())
        row.update({f"oof_{m}": v.oof[m] for m in METRICS})
        row["degenerate"] = degenerate(v) or ""
        row.update({name: v.cell.metrics.get(name) for name in comparison.extra_metrics})
        row["reference"] = v.contrast is None
        c = v.contrast
        if c is not None:
            for name, result in (("test", c.test_auc), ("oof", c.oof_auc)):
                if result is not None:
                    row[f"delta_auc_{name}"] = result.difference
                    low, high = delong_interval(result, comparison.level)
                    row[f"delta_auc_{name}_low"], row[f"delta_auc_{name}_high"] = low, high
                    row[f"p_delong_{name}"] = result.p_value
                    row[f"p_holm_delong_{name}"] = c.holm.get(f"{name}_auc")
            if c.test_accuracy is not None:
                row["mcnemar_only_variant_right"] = c.test_accuracy.only_a_correct
                row["mcnemar_only_reference_right"] = c.test_accuracy.only_b_correct
                row["p_mcnemar_test"] = c.test_accuracy.p_value
                row["p_holm_mcnemar_test"] = c.holm.get("test_accuracy")
            row["verdict"] = verdict(v, comparison.reference, comparison.alpha)
        rows.append(row)
    for s in comparison.skipped:
        rows.append({"variant": s.name, "status": s.status, "run_id": s.run_id, "reason": s.reason})
    return pd.DataFrame(rows)
