"""Is the malignant probability honest? Expected calibration error, temperature and Platt scaling.

Reliability is measured on the malignant (positive-class) probability, the number a reader sees:
in equal-width bins, the mean predicted probability is compared with the observed malignant
fraction. Both recalibrations map p to sigmoid(logit(p) / T + b), fitted by maximum likelihood
on validation predictions only, and change no ranking (AUC, the operating points' order):

- temperature scaling (Guo et al., ICML 2017) fits T alone (b = 0): it fixes over- and
  under-confidence, but not a shifted prior;
- Platt scaling (Platt 1999) fits T and b: the bias b also moves the logit, which undoes the
  prior shift that class balancing in training (flip copies, class weights) puts into every
  probability. Validation folds keep the data's own prevalence, so they can fit it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, logit
from sklearn.metrics import log_loss

# Probabilities are clipped before the logit: a float32 softmax rounds to exactly 0 or 1.
PROB_EPS = 1e-7
TEMPERATURE_BOUNDS = (0.05, 20.0)
BIAS_BOUNDS = (-10.0, 10.0)
CALIBRATION_METHODS: tuple[str, ...] = ("platt", "temperature", "none")


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


def apply_temperature(probs: np.ndarray, temperature: float, bias: float = 0.0) -> np.ndarray:
    """sigmoid(logit(p) / T + b): with b = 0, exactly softmax(logits / T)[:, 1] of a two-class
    softmax; b shifts the log-odds (Platt scaling).

    For an ensemble, scale each member before averaging: `calibrated_ensemble`.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    clipped = np.clip(np.asarray(probs, dtype=float), PROB_EPS, 1 - PROB_EPS)
    return expit(logit(clipped) / temperature + bias)


def calibrated_ensemble(
    member_probs: np.ndarray, temperature: float, bias: float = 0.0
) -> np.ndarray:
    """Mean over members (axis 0) of each member's recalibrated probability.

    The calibration is fitted on out-of-fold predictions, each made by one fold model, so it
    belongs to single members. Averaging already softens an ensemble's probability; scaling the
    mean by the members' temperature would soften it twice.
    """
    members = np.atleast_2d(member_probs)
    return np.mean([apply_temperature(p, temperature, bias) for p in members], 0)


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


def fit_platt(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(T, b) that minimise the negative log-likelihood of sigmoid(logit(p) / T + b).

    Fitted on validation data only. T stays within TEMPERATURE_BOUNDS, so a model with no
    signal cannot flip its ranking. Returns (1.0, 0.0), no change, when there is nothing to fit:
    fewer than two classes present.
    """
    labels = np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2:
        return 1.0, 0.0
    logits = logit(np.clip(np.asarray(probs, dtype=float), PROB_EPS, 1 - PROB_EPS))

    def nll(params: np.ndarray) -> float:
        scaled = expit(logits / math.exp(params[0]) + params[1])
        return float(log_loss(labels, np.clip(scaled, PROB_EPS, 1 - PROB_EPS), labels=[0, 1]))

    start = np.array([math.log(fit_temperature(labels, probs)), 0.0])
    bounds = [tuple(math.log(b) for b in TEMPERATURE_BOUNDS), BIAS_BOUNDS]
    result = minimize(nll, start, method="L-BFGS-B", bounds=bounds)
    return float(math.exp(result.x[0])), float(result.x[1])


def fit_calibration(labels: np.ndarray, probs: np.ndarray, method: str) -> tuple[float, float]:
    """(T, b) of `method`: `platt` fits both, `temperature` T alone, `none` returns (1, 0)."""
    if method == "platt":
        return fit_platt(labels, probs)
    if method == "temperature":
        return fit_temperature(labels, probs), 0.0
    if method == "none":
        return 1.0, 0.0
    raise ValueError(
        f"evaluation.calibration: unknown method {method!r}; use one of "
        f"{', '.join(CALIBRATION_METHODS)}"
    )
