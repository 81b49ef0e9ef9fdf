"""Is the malignant probability honest? Expected calibration error and temperature scaling.

Reliability is measured on the malignant (positive-class) probability, the number a reader sees:
in equal-width bins, the mean predicted probability is compared with the observed malignant
fraction. Temperature scaling (Guo et al., ICML 2017) divides the logit by one scalar T fitted
by maximum likelihood on validation predictions only; it changes no ranking (AUC, operating
points' order) but can make 0.8 mean "malignant 8 times in 10".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.metrics import log_loss

# Probabilities are clipped before the logit: a float32 softmax rounds to exactly 0 or 1.
PROB_EPS = 1e-7
TEMPERATURE_BOUNDS = (0.05, 20.0)


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width bins of predicted probability; empty bins have count 0 and NaN means."""

    edges: np.ndarray  # (n_bins + 1,)
    mean_prob: np.ndarray  # (n_bins,)
    positive_rate: np.ndarray  # (n_bins,) observed malignant fraction
    counts: np.ndarray  # (n_bins,)


def reliability_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """Bin predictions by probability; a probability of exactly 1 falls in the last bin."""
    if n_bins < 1:
        raise ValueError(f"evaluation.calibration_bins must be >= 1, got {n_bins}")
    labels = np.asarray(labels, dtype=float)
    probs = np.asarray(probs, dtype=float)
    if labels.shape != probs.shape:
        raise ValueError(f"labels {labels.shape} and probabilities {probs.shape} differ in shape")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1], right=False), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(which, weights=probs, minlength=n_bins) / counts
        positive_rate = np.bincount(which, weights=labels, minlength=n_bins) / counts
    return ReliabilityBins(edges, mean_prob, positive_rate, counts)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Count-weighted mean |observed malignant fraction - mean probability| over the bins.

    0 is perfectly calibrated; NaN for no predictions.
    """
    bins = reliability_bins(labels, probs, n_bins)
    total = bins.counts.sum()
    if total == 0:
        return math.nan
    filled = bins.counts > 0
    gaps = np.abs(bins.positive_rate[filled] - bins.mean_prob[filled])
    return float(np.sum(bins.counts[filled] * gaps) / total)


def negative_log_likelihood(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean log loss, the proper score temperature scaling minimises; NaN for no predictions.

    With ~100 test images the ECE's bins hold a handful each and it is noisy; the NLL says more
    reliably whether a temperature helped.
    """
    if len(labels) == 0:
        return math.nan
    clipped = np.clip(np.asarray(probs, dtype=float), PROB_EPS, 1 - PROB_EPS)
    return float(log_loss(np.asarray(labels, dtype=int), clipped, labels=[0, 1]))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T): for two-class softmax outputs, exactly softmax(logits / T)[:, 1].

    For an ensemble, scale each member before averaging: `calibrated_ensemble`.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    clipped = np.clip(np.asarray(probs, dtype=float), PROB_EPS, 1 - PROB_EPS)
    return expit(logit(clipped) / temperature)


def calibrated_ensemble(member_probs: np.ndarray, temperature: float) -> np.ndarray:
    """Mean over members (axis 0) of each member's temperature-scaled probability.

    The temperature is fitted on out-of-fold predictions, each made by one fold model, so it
    belongs to single members. Averaging already softens an ensemble's probability; scaling the
    mean by the members' temperature would soften it twice.
    """
    return np.mean([apply_temperature(p, temperature) for p in np.atleast_2d(member_probs)], 0)


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The T that minimises the negative log-likelihood of `labels` (validation data only).

    Returns 1.0 (no change) when there is nothing to fit: fewer than two classes present.
    """
    labels = np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2:
        return 1.0
    logits = logit(np.clip(np.asarray(probs, dtype=float), PROB_EPS, 1 - PROB_EPS))

    def nll(log_t: float) -> float:
        return float(log_loss(labels, expit(logits / math.exp(log_t)), labels=[0, 1]))

    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded")
    return float(math.exp(result.x))
