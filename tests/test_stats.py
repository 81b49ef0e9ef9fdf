"""DeLong, McNemar and the bootstrap against published values and independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fus2net.evaluation.metrics import binary_metrics
from fus2net.evaluation.stats import (
    auc_standard_error,
    bootstrap_intervals,
    delong_covariance,
    delong_interval,
    delong_placements,
    delong_test,
    exact_fallbacks,
    holm,
    mcnemar_test,
    proportion_counts,
    proportion_interval,
)

# pROC's aSAH data (Robin et al. 2011; 41 poor outcomes = cases, 72 good = controls), rebuilt
# rank-for-rank from pROC's own expected ROC curves (tests/testthat/helper-roc-expected.R): the
# number of cases and controls at each distinct marker value, in increasing order. AUC and DeLong
# variance depend on ranks only, so these reproduce pROC exactly.
ASAH_WFNS = ([2, 12, 1, 8, 18], [37, 20, 3, 8, 4])
ASAH_S100B = (
    [1, 0, 0, 0, 3, 1, 2, 2, 1, 1, 2, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1, 1, 1, 0, 1,
     1, 1, 0, 1, 0, 1, 0, 2, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1],
    [0, 5, 3, 2, 6, 6, 6, 7, 4, 0, 3, 4, 4, 3, 2, 1, 2, 0, 0, 1, 0, 0, 0, 1, 0,
     1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 2, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
)  # fmt: skip
# pROC tests/testthat/test-var.R and helper-roc-expected.R: var(roc(outcome, marker)), DeLong.
PROC_EXPECTED = {
    "wfns": (ASAH_WFNS, 0.82367886178861793, 0.00146991470882363),
    "s100b": (ASAH_S100B, 0.73136856368563685, 0.00266868245717244),
}

# DeLong, DeLong & Clarke-Pearson (1988), as printed in the SAS/STAT PROC LOGISTIC example
# "Comparing Receiver Operating Characteristic Curves": albumin, total protein, K-G score and
# survival (popind); the 43 patients with complete records.
DELONG_1988 = """
3.0 5.8 10 0  3.2 6.3 5 1  3.9 6.8 3 1  2.8 4.8 6 0  3.2 5.8 3 1  0.9 4.0 5 0  2.5 5.7 8 0
1.6 5.6 5 1  3.8 5.7 5 1  3.7 6.7 6 1  3.2 5.4 4 1  3.8 6.6 6 1  4.1 6.6 5 1  3.6 5.7 5 1
4.3 7.0 4 1  3.6 6.7 4 0  2.3 4.4 6 1  4.2 7.6 4 0  4.0 6.6 6 0  3.5 5.8 6 1  3.8 6.8 7 1
3.0 4.7 8 0  4.5 7.4 5 1  3.7 7.4 5 1  3.1 6.6 6 1  4.1 8.2 6 1  4.3 7.0 5 1  4.3 6.5 4 1
3.2 5.1 5 1  2.6 4.7 6 1  3.3 6.8 6 0  1.7 4.0 7 0  3.7 6.1 5 1  3.3 6.3 7 1  4.2 7.7 6 1
3.5 6.2 5 1  2.9 5.7 9 0  2.1 4.8 7 1  2.8 6.2 8 0  4.0 7.0 7 1  3.3 5.7 6 1  3.7 6.9 5 1
3.6 6.6 5 1
"""


def expand(cases: list[int], controls: list[int]) -> tuple[np.ndarray, np.ndarray]:
    values = np.arange(len(cases), dtype=float)
    scores = np.concatenate([np.repeat(values, cases), np.repeat(values, controls)])
    labels = np.concatenate([np.ones(sum(cases), int), np.zeros(sum(controls), int)])
    return labels, scores


def delong_1988() -> tuple[np.ndarray, np.ndarray]:
    rows = np.array(DELONG_1988.split(), dtype=float).reshape(-1, 4)
    albumin, protein, kg_score, survived = rows.T
    # popind = 0 (death within two months) is the event; high albumin means survival.
    return (survived == 0).astype(int), np.vstack([-albumin, -protein, kg_score])


def brute_force_covariance(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """DeLong et al. (1988) eq. (2)-(5) from the full m x n table of case/control comparisons."""
    pos, neg = labels == 1, labels == 0
    comps = []
    for s in scores:
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    k, m, n = len(scores), pos.sum(), neg.sum()
    s10, s01 = np.zeros((k, k)), np.zeros((k, k))
    for r in range(k):
        for s in range(k):
            s10[r, s] = ((comps[r][1] - comps[r][0]) * (comps[s][1] - comps[s][0])).sum() / (m - 1)
            s01[r, s] = ((comps[r][2] - comps[r][0]) * (comps[s][2] - comps[s][0])).sum() / (n - 1)
    return s10 / m + s01 / n


@pytest.mark.parametrize("marker", sorted(PROC_EXPECTED))
def test_delong_auc_and_variance_match_proc(marker: str) -> None:
    (cases, controls), auc, variance = PROC_EXPECTED[marker]
    labels, scores = expand(cases, controls)
    aucs, cov = delong_covariance(labels, scores)
    assert aucs[0] == pytest.approx(auc, abs=1e-12)
    assert cov[0, 0] == pytest.approx(variance, abs=1e-12)
    assert auc_standard_error(labels, scores) == pytest.approx(np.sqrt(variance), abs=1e-12)


def test_fast_delong_equals_brute_force_structural_components() -> None:
    labels, scores = delong_1988()
    aucs, cov = delong_covariance(labels, scores)
    assert aucs == pytest.approx([roc_auc_score(labels, s) for s in scores], abs=1e-12)
    assert cov == pytest.approx(brute_force_covariance(labels, scores), abs=1e-12)
    # areas of albumin, total protein and K-G score for death within two months (regression guard)
    assert np.round(aucs, 4).tolist() == [0.7366, 0.6478, 0.7258]


def test_paired_test_uses_the_covariance_of_the_two_areas() -> None:
    labels, scores = delong_1988()
    cov = brute_force_covariance(labels, scores[[0, 2]])
    expected_se = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    result = delong_test(labels, scores[0], scores[2])
    assert result.se == pytest.approx(expected_se, abs=1e-12)
    assert result.difference == pytest.approx(result.auc_a - result.auc_b)
    assert result.z == pytest.approx(result.difference / expected_se)
    # correlated curves: the paired SE is well below the unpaired sqrt(var_a + var_b)
    assert result.se < np.sqrt(cov[0, 0] + cov[1, 1])
    swapped = delong_test(labels, scores[2], scores[0])
    assert swapped.z == pytest.approx(-result.z)
    assert swapped.p_value == pytest.approx(result.p_value)


def test_delong_interval_of_the_difference_matches_brute_force() -> None:
    labels, scores = delong_1988()
    cov = brute_force_covariance(labels, scores[[0, 2]])
    difference = roc_auc_score(labels, scores[0]) - roc_auc_score(labels, scores[2])
    half = 1.959963984540054 * np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    result = delong_test(labels, scores[0], scores[2])
    low, high = delong_interval(result, 0.95)
    assert (low, high) == pytest.approx((difference - half, difference + half), abs=1e-12)
    # the interval holds 0 exactly when the test does not reject at the matching level
    for level in (0.5, 0.9, 0.95, 0.99):
        low, high = delong_interval(result, level)
        assert (low <= 0 <= high) == (result.p_value >= 1 - level)
    wide = delong_test(labels, scores[0], -scores[0])  # far apart: cut at the range
    assert delong_interval(wide, 0.999)[1] <= 1.0 and delong_interval(wide, 0.999)[0] >= -1.0
    same = delong_test(labels, scores[0], scores[0])
    assert delong_interval(same) == (0.0, 0.0)
    with pytest.raises(ValueError, match="level"):
        delong_interval(result, 95)


def test_identical_scores_give_p_one_and_a_strong_difference_is_detected() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    good = labels * 2.0 + rng.normal(size=200)
    weak = labels * 0.2 + rng.normal(size=200)
    same = delong_test(labels, good, good)
    assert (same.z, same.p_value, same.se) == (0.0, 1.0, 0.0)
    assert delong_test(labels, good, weak).p_value < 1e-6
    # a monotone transform changes no rank, hence no AUC and no variance
    assert delong_test(labels, good, np.exp(good)).p_value == 1.0


def test_a_difference_without_variance_is_untestable_not_insignificant() -> None:
    labels = np.repeat([0, 1], 20)
    perfect, constant = labels.astype(float), np.full(40, 0.5)  # AUC 1 vs 0.5, both variance 0
    result = delong_test(labels, perfect, constant)
    assert result.se == 0.0 and result.z == math.inf and math.isnan(result.p_value)
    assert mcnemar_test(labels, perfect >= 0.5, constant >= 0.5).n == 40


def test_delong_rejects_one_class_and_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="at least 2 positive"):
        delong_placements(np.array([0, 0, 0, 1]), np.arange(4.0))
    with pytest.raises(ValueError, match="one score per case"):
        delong_test(np.array([0, 1, 0, 1]), np.arange(4.0), np.arange(3.0))


def test_mcnemar_exact_p_by_hand() -> None:
    labels = np.ones(10, int)
    a = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1, 1])  # right on 0, 8, 9
    b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1])  # right on 1..9
    result = mcnemar_test(labels, a, b)
    assert (result.only_a_correct, result.only_b_correct) == (1, 7)
    assert result.p_value == pytest.approx(2 * (1 + 8) / 2**8)  # two-sided binomial, n = 8
    assert mcnemar_test(labels, a, a).p_value == 1.0


def test_bootstrap_auc_of_integer_weights_equals_auc_of_the_repeated_sample() -> None:
    from fus2net.evaluation.stats import _weighted_metrics

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 40)
    probs = np.round(rng.random(40), 1)  # many ties
    weights = rng.multinomial(40, np.full(40, 1 / 40), 5).astype(float)
    values = _weighted_metrics(labels, probs, weights, 0.5)
    for b in range(5):
        idx = np.repeat(np.arange(40), weights[b].astype(int))
        expected = binary_metrics(labels[idx], probs[idx])
        for name, value in expected.items():
            assert values[name][b] == pytest.approx(value), name


def test_bootstrap_interval_behaviour() -> None:
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 200)
    probs = 1 / (1 + np.exp(-(labels * 2.0 - 1 + rng.normal(size=400))))
    point = binary_metrics(labels, probs)
    full = bootstrap_intervals(labels, probs, n_boot=1000, seed=0)
    small = bootstrap_intervals(labels[::4], probs[::4], n_boot=1000, seed=0)
    for name, (low, high) in full.items():
        assert low <= point[name] <= high, name
        # four times the images: about half the width (1 / sqrt(n))
        ratio = (small[name][1] - small[name][0]) / (high - low)
        assert 1.5 < ratio < 2.8, (name, ratio)
    assert bootstrap_intervals(labels, probs, n_boot=1000, seed=0) == full  # seeded
    narrower = bootstrap_intervals(labels, probs, n_boot=1000, level=0.5, seed=0)
    assert narrower["auc"][1] - narrower["auc"][0] < full["auc"][1] - full["auc"][0]
    perfect = bootstrap_intervals(labels, labels.astype(float), n_boot=200)
    assert perfect["auc"] == (1.0, 1.0) and perfect["accuracy"] == (1.0, 1.0)


def test_bootstrap_by_patient_is_not_fooled_by_repeated_images() -> None:
    """Four copies of each patient's image are one patient: the interval must not shrink."""
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 40)
    probs = 1 / (1 + np.exp(-(labels * 1.5 - 0.75 + rng.normal(size=80))))
    patients = np.arange(80)
    per_patient = bootstrap_intervals(labels, probs, n_boot=2000, seed=0)
    copies = np.tile(np.arange(80), 4)
    by_image = bootstrap_intervals(labels[copies], probs[copies], n_boot=2000, seed=0)
    by_group = bootstrap_intervals(
        labels[copies], probs[copies], groups=patients[copies].tolist(), n_boot=2000, seed=0
    )

    def width(ci: dict, name: str) -> float:
        return ci[name][1] - ci[name][0]

    for name in ("accuracy", "auc"):
        assert width(by_image, name) < 0.7 * width(per_patient, name), name
        assert width(by_group, name) == pytest.approx(width(per_patient, name), rel=0.2), name


def test_bootstrap_input_errors() -> None:
    with pytest.raises(ValueError, match="equal 1-D"):
        bootstrap_intervals(np.array([0, 1]), np.array([0.5]))
    with pytest.raises(ValueError, match="group ids"):
        bootstrap_intervals(np.array([0, 1]), np.array([0.2, 0.8]), groups=["a"])


def test_holm_matches_published_and_hand_values() -> None:
    # R: p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm") = 0.05 0.08 0.09 0.09 0.09
    assert holm([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    # unsorted: 0.005 * 4, 0.01 * 3, 0.03 * 2, then max(0.06, 0.04 * 1), back in input order
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2]) == [0.2]  # a family of one is not adjusted
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []


def test_holm_leaves_untestable_comparisons_out_of_the_family() -> None:
    adjusted = holm([0.01, math.nan, 0.04])
    assert math.isnan(adjusted[1])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)  # m = 2


def test_holm_is_monotone_and_between_raw_and_bonferroni() -> None:
    rng = np.random.default_rng(4)
    p = rng.random(12) ** 3
    adjusted = np.array(holm(p))
    assert np.all(adjusted >= p) and np.all(adjusted <= np.minimum(1, 12 * p) + 1e-12)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)  # the order of the raw p-values is kept


def test_clopper_pearson_matches_its_closed_forms_and_beta_quantiles() -> None:
    from scipy.stats import beta

    # all n successes: the lower limit solves p^n = alpha/2; none: 1 - (alpha/2)^(1/n)
    assert proportion_interval(6, 6) == pytest.approx((0.025 ** (1 / 6), 1.0))  # 0.5407
    assert proportion_interval(0, 12) == pytest.approx((0.0, 1 - 0.025 ** (1 / 12)))  # 0.2646
    low, high = proportion_interval(7, 20, level=0.9)
    assert low == pytest.approx(beta.ppf(0.05, 7, 14)) and high == pytest.approx(
        beta.ppf(0.95, 8, 13)
    )
    wilson = proportion_interval(6, 6, method="wilson")
    assert wilson[0] > proportion_interval(6, 6)[0]  # Wilson is the narrower of the two
    assert all(math.isnan(x) for x in proportion_interval(0, 0))


def test_exact_interval_covers_where_the_percentile_bootstrap_cannot() -> None:
    """Six positives, true sensitivity 0.9: the chance each interval covers 0.9, summed exactly
    over the binomial outcomes k = 0..6 (no simulation)."""
    from scipy.stats import binom

    n, truth = 6, 0.9
    labels = np.ones(n, int)
    boot_cover = exact_cover = 0.0
    for k in range(n + 1):
        probs = np.r_[np.full(k, 0.9), np.full(n - k, 0.1)]  # k of the 6 found
        low, high = bootstrap_intervals(labels, probs, n_boot=500)["sensitivity"]
        boot_cover += binom.pmf(k, n, truth) * (low <= truth <= high)
        e_low, e_high = proportion_interval(k, n)
        exact_cover += binom.pmf(k, n, truth) * (e_low <= truth <= e_high)
    assert exact_cover >= 0.95
    assert boot_cover < 0.5  # 6 of 6 (p = 0.53) gives [1, 1]


def test_exact_fallbacks_replace_degenerate_proportions_only() -> None:
    # 6 malignant all found, 12 benign all called malignant: sensitivity 6/6, specificity 0/12
    labels = np.r_[np.ones(6, int), np.zeros(12, int)]
    probs = np.full(18, 0.9)
    boot = bootstrap_intervals(labels, probs, n_boot=300)
    assert boot["sensitivity"] == (1.0, 1.0) and boot["specificity"] == (0.0, 0.0)
    found = exact_fallbacks(labels, probs, boot)
    assert set(found) == {"sensitivity", "specificity"}  # accuracy, precision: 6 of 18
    sens = found["sensitivity"]
    assert (sens.successes, sens.trials) == (6, 6)
    assert (sens.low, sens.high) == pytest.approx(proportion_interval(6, 6))
    assert found["specificity"].high == pytest.approx(1 - 0.025 ** (1 / 12))
    # a small count with a non-zero-width bootstrap interval also qualifies ...
    probs = np.r_[np.full(5, 0.9), 0.1, np.full(12, 0.1)]  # sensitivity 5/6
    assert "sensitivity" in exact_fallbacks(labels, probs, bootstrap_intervals(labels, probs))
    # ... and with hundreds of images of each kind, nothing does; AUC never does
    rng = np.random.default_rng(5)
    big = np.repeat([0, 1], 200)
    scores = 1 / (1 + np.exp(-(big * 2.0 - 1 + rng.normal(size=400))))
    assert exact_fallbacks(big, scores, bootstrap_intervals(big, scores, n_boot=300)) == {}
    # nothing called positive: precision is undefined and stays so
    nothing = exact_fallbacks(labels, np.zeros(18), bootstrap_intervals(labels, np.zeros(18)))
    assert "precision" not in nothing and "auc" not in nothing


def test_proportion_counts_are_the_confusion_counts() -> None:
    labels = np.array([1, 1, 1, 0, 0])
    probs = np.array([0.9, 0.6, 0.2, 0.7, 0.1])  # TP 2, FN 1, FP 1, TN 1
    assert proportion_counts(labels, probs) == {
        "accuracy": (3, 5),
        "sensitivity": (2, 3),
        "specificity": (1, 2),
        "precision": (2, 3),
    }
    point = binary_metrics(labels, probs)
    for name, (k, n) in proportion_counts(labels, probs).items():
        assert k / n == pytest.approx(point[name]), name
