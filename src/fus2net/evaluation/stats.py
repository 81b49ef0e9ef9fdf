"""Honest comparisons of two classifiers: DeLong's AUC test, McNemar's test, bootstrap intervals,
exact binomial intervals where the bootstrap degenerates, and Holm's step-down adjustment.

All three are paired: the same images scored by both variants, so that image difficulty cancels
out and small differences can be told from noise. DeLong's test uses the fast algorithm of
Sun & Xu (2014), which gives the structural components of DeLong et al. (1988) from mid-ranks
in O(n log n) instead of the O(m n) table of all case/control pairs. Bootstrap intervals resample
images, or whole patients when group ids exist, so that several images of one patient never
look like independent evidence. A percentile bootstrap of a proportion cannot be wider than the
sample shows: 6 of 6 positives found resample to 6 of 6 every time, "100 [100, 100]". There the
exact (Clopper-Pearson) interval of the count is given instead (`exact_fallbacks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, norm, rankdata

from fus2net.evaluation.metrics import METRICS


@dataclass(frozen=True)
class DelongResult:
    """Paired DeLong test of AUC(a) - AUC(b) on the same cases."""

    auc_a: float
    auc_b: float
    se: float  # standard error of the difference
    z: float
    p_value: float  # two-sided
    n_positive: int
    n_negative: int

    @property
    def difference(self) -> float:
        return self.auc_a - self.auc_b


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test on the images that exactly one of the two variants gets right."""

    only_a_correct: int
    only_b_correct: int
    p_value: float
    n: int  # images both variants scored: the denominator of their accuracy difference


def _two_classes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(int)
    if not set(np.unique(labels)) <= {0, 1}:
        raise ValueError(f"labels must be 0/1, got values {sorted(set(labels.tolist()))}")
    positive, negative = labels == 1, labels == 0
    if positive.sum() < 2 or negative.sum() < 2:
        raise ValueError(
            "DeLong needs at least 2 positive and 2 negative cases; got "
            f"{int(positive.sum())} positive and {int(negative.sum())} negative"
        )
    return positive, negative


def delong_placements(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong placement values of k score vectors (Sun & Xu 2014, Algorithm 2).

    `scores` is (k, n) or (n,). Returns `auc` (k,), `v10` (k, m) - for each positive case the
    share of negatives it outranks - and `v01` (k, n0) - for each negative the share of positives
    that outrank it; ties count one half. These are DeLong's structural components.
    """
    positive, negative = _two_classes(labels)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    m, n = int(positive.sum()), int(negative.sum())
    rank_all = rankdata(scores, axis=1)  # mid-ranks, ties averaged
    rank_pos = rankdata(scores[:, positive], axis=1)
    rank_neg = rankdata(scores[:, negative], axis=1)
    auc = (rank_all[:, positive].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (rank_all[:, positive] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, negative] - rank_neg) / m
    return auc, v10, v01


def delong_covariance(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance matrix (k, k) on the same cases."""
    auc, v10, v01 = delong_placements(labels, scores)
    m, n = v10.shape[1], v01.shape[1]
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return auc, cov


def auc_standard_error(labels: np.ndarray, scores: np.ndarray) -> float:
    """DeLong's standard error of one empirical AUC (what pROC and Stata's roctab report)."""
    _, cov = delong_covariance(labels, scores)
    return float(math.sqrt(cov[0, 0]))


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DelongResult:
    """Two-sided paired test of equal AUCs for two score vectors on the same cases."""
    scores_a, scores_b = np.asarray(scores_a, float), np.asarray(scores_b, float)
    if scores_a.shape != scores_b.shape or scores_a.shape != np.shape(labels):
        raise ValueError(
            f"paired test needs one score per case from each variant: labels {np.shape(labels)}, "
            f"a {scores_a.shape}, b {scores_b.shape}"
        )
    auc, cov = delong_covariance(labels, np.vstack([scores_a, scores_b]))
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    se = math.sqrt(max(variance, 0.0))
    difference = auc[0] - auc[1]
    if se == 0.0 and difference == 0.0:  # identical rankings: no evidence of a difference
        z, p = 0.0, 1.0
    elif se == 0.0:  # e.g. a constant score against a perfect one: the test is undefined
        z, p = math.copysign(math.inf, difference), math.nan
    else:
        z = difference / se
        p = float(2 * norm.sf(abs(z)))
    labels = np.asarray(labels).astype(int)
    return DelongResult(
        float(auc[0]), float(auc[1]), se, float(z), p, int(labels.sum()), int((1 - labels).sum())
    )


def delong_interval(result: DelongResult, level: float = 0.95) -> tuple[float, float]:
    """Wald interval of AUC(a) - AUC(b) from DeLong's paired standard error, cut at [-1, 1].

    The same variance as the test, so the interval excludes 0 exactly when the unadjusted p is
    below 1 - `level`: a reader sees how large the difference may be, not only whether it is
    zero. A difference without variance (identical or perfect rankings) gives a zero-width
    interval, which is no certainty: the caller says so.
    """
    if not 0 < level < 1:
        raise ValueError(f"level={level}: give a coverage between 0 and 1, e.g. 0.95")
    half = float(norm.ppf(0.5 + level / 2)) * result.se
    return max(-1.0, result.difference - half), min(1.0, result.difference + half)


def mcnemar_test(labels: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> McNemarResult:
    """Exact (binomial) McNemar test of equal accuracy on the same cases.

    Only discordant images count: under the null each is equally likely to favour either variant.
    The exact form is valid at any count, which matters for test sets of a hundred images.
    """
    labels = np.asarray(labels).astype(int)
    correct_a = np.asarray(pred_a).astype(int) == labels
    correct_b = np.asarray(pred_b).astype(int) == labels
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return McNemarResult(only_a, only_b, p, len(labels))


def _weighted_metrics(
    labels: np.ndarray, probs: np.ndarray, weights: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """The paper's metrics for B resamples at once, each given as case weights (B, n).

    A bootstrap resample is a multiset of cases, i.e. integer weights; the AUC of a weighted
    sample is the weighted share of (positive, negative) pairs ranked correctly, ties one half.
    """
    pred = probs >= threshold
    pos, neg = labels == 1, labels == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        tp = weights[:, pos & pred].sum(1)
        fn = weights[:, pos & ~pred].sum(1)
        tn = weights[:, neg & ~pred].sum(1)
        fp = weights[:, neg & pred].sum(1)
        out = {
            "accuracy": (tp + tn) / weights.sum(1),
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "precision": tp / (tp + fp),
        }
        # AUC: group equal scores; for each group, negatives strictly below plus half the ties.
        _, group = np.unique(probs, return_inverse=True)
        n_groups = group.max() + 1
        onehot = np.zeros((len(probs), n_groups))
        onehot[np.arange(len(probs)), group] = 1.0
        neg_w = (weights * neg) @ onehot
        pos_w = (weights * pos) @ onehot
        below = np.cumsum(neg_w, axis=1) - neg_w
        pairs = pos_w.sum(1) * neg_w.sum(1)
        out["auc"] = (pos_w * (below + 0.5 * neg_w)).sum(1) / pairs
    return out


def bootstrap_intervals(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: Sequence[object] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the paper's metrics.

    Resamples images with replacement or, when `groups` (patient ids) are given, whole groups,
    so that correlated images of one patient stay together. Resamples in which a metric is
    undefined (no positives, say) are left out of that metric's interval.
    """
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=float)
    if labels.shape != probs.shape or labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels {labels.shape} and probs {probs.shape} must be equal 1-D")
    if not 0 < level < 1:
        raise ValueError(f"level={level}: give a coverage between 0 and 1, e.g. 0.95")
    rng = np.random.default_rng(seed)
    if groups is None:
        weights = rng.multinomial(len(labels), np.full(len(labels), 1 / len(labels)), n_boot)
    else:
        if len(groups) != len(labels):
            raise ValueError(f"{len(groups)} group ids for {len(labels)} images")
        _, member = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        n_groups = member.max() + 1
        weights = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), n_boot)[:, member]
    values = _weighted_metrics(labels, probs, weights.astype(float), threshold)
    tail = (1 - level) / 2 * 100
    intervals = {}
    for name in METRICS:
        finite = values[name][np.isfinite(values[name])]
        if len(finite) == 0:
            intervals[name] = (math.nan, math.nan)
        else:
            low, high = np.percentile(finite, [tail, 100 - tail])
            intervals[name] = (float(low), float(high))
    return intervals


# A proportion with fewer successes or failures than this gets the exact interval: below it the
# percentile bootstrap undercovers (at 0 it has zero width), the usual np >= 5 rule of thumb.
MIN_COUNT = 5
PROPORTIONS = ("accuracy", "sensitivity", "specificity", "precision")  # binomial counts, not AUC


@dataclass(frozen=True)
class ExactInterval:
    """A proportion's exact binomial interval, with the count it comes from."""

    metric: str
    successes: int
    trials: int
    low: float
    high: float
    method: str  # scipy's name: "exact" (Clopper-Pearson) or "wilson"


def proportion_counts(
    labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5
) -> dict[str, tuple[int, int]]:
    """(successes, trials) behind each threshold metric: e.g. sensitivity = TP of TP + FN."""
    labels = np.asarray(labels).astype(int)
    pred = np.asarray(probs, dtype=float) >= threshold
    tp = int((pred & (labels == 1)).sum())
    tn = int((~pred & (labels == 0)).sum())
    positives, negatives = int((labels == 1).sum()), int((labels == 0).sum())
    return {
        "accuracy": (tp + tn, len(labels)),
        "sensitivity": (tp, positives),
        "specificity": (tn, negatives),
        "precision": (tp, int(pred.sum())),
    }


def proportion_interval(
    successes: int, trials: int, level: float = 0.95, method: str = "exact"
) -> tuple[float, float]:
    """Clopper-Pearson (`exact`) or Wilson interval of `successes` of `trials` (scipy's)."""
    if trials == 0:
        return math.nan, math.nan
    ci = binomtest(successes, trials).proportion_ci(confidence_level=level, method=method)
    return float(ci.low), float(ci.high)


def exact_fallbacks(
    labels: np.ndarray,
    probs: np.ndarray,
    bootstrap: dict[str, tuple[float, float]],
    level: float = 0.95,
    threshold: float = 0.5,
    min_count: int = MIN_COUNT,
    method: str = "exact",
) -> dict[str, ExactInterval]:
    """The proportions whose bootstrap interval should give way to an exact one, with it.

    A proportion qualifies when its bootstrap interval has zero width or it has fewer than
    `min_count` successes or failures. Undefined ones (precision with nothing called positive)
    keep the bootstrap's n/a. AUC is not a binomial count and is never replaced.
    """
    found = {}
    for name, (k, n) in proportion_counts(labels, probs, threshold).items():
        low, high = bootstrap.get(name, (math.nan, math.nan))
        if n == 0 or not (low == high or min(k, n - k) < min_count):
            continue
        found[name] = ExactInterval(name, k, n, *proportion_interval(k, n, level, method), method)
    return found


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979): family-wise error control, never less
    powerful than Bonferroni. NaN (an untestable comparison) stays NaN and is not counted in the
    family. Hand-written: scipy has no Holm, and statsmodels is not a dependency."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):  # the i-th smallest p is multiplied by (m - i + 1)
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
