"""Calibration error, temperature and Platt scaling, operating points and the model card."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit, logit

from fus2net.clinical.model_card import ModelCardFacts, render_model_card
from fus2net.clinical.plots import save_reliability_diagram
from fus2net.evaluation.calibration import (
    apply_temperature,
    calibrated_ensemble,
    expected_calibration_error,
    fit_calibration,
    fit_platt,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)
from fus2net.evaluation.operating_points import (
    choose_operating_points,
    operating_point_metrics,
    sensitivity_name,
    threshold_for_sensitivity,
    youden_threshold,
)
from fus2net.inference.spec import Member, ModelSpec


def sample(n: int, seed: int, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z / T) and the probabilities sigmoid(z) a model reports:
    T = 1 is calibrated, T > 1 overconfident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, n)
    labels = (rng.random(n) < expit(z / temperature)).astype(int)
    return labels, expit(z)


def test_ece_of_a_hand_computed_case() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = np.array([0.1, 0.1, 0.9, 0.9])
    # each bin is 0.1 away from its observed rate
    assert expected_calibration_error(labels, probs, n_bins=10) == pytest.approx(0.1)
    assert expected_calibration_error(labels, np.array([0.0, 0.0, 1.0, 1.0]), 10) == 0.0


def test_bins_hold_every_prediction_including_zero_and_one() -> None:
    bins = reliability_bins(np.array([0, 1, 1]), np.array([0.0, 0.5, 1.0]), n_bins=4)
    assert bins.counts.sum() == 3 and bins.counts[0] == 1 and bins.counts[-1] == 1
    assert np.isnan(bins.mean_prob[1])  # an empty bin
    with pytest.raises(ValueError, match="differ in shape"):
        reliability_bins(np.array([0, 1]), np.array([0.5]))


def test_ece_separates_calibrated_from_overconfident() -> None:
    calibrated = expected_calibration_error(*sample(20000, seed=0))
    overconfident = expected_calibration_error(*sample(20000, seed=0, temperature=3.0))
    assert calibrated < 0.02 < 0.1 < overconfident


def test_temperature_is_recovered_and_fixes_overconfidence() -> None:
    labels, probs = sample(5000, seed=1, temperature=2.0)
    temperature = fit_temperature(labels, probs)
    assert temperature == pytest.approx(2.0, rel=0.15)
    test_labels, test_probs = sample(5000, seed=2, temperature=2.0)
    before = expected_calibration_error(test_labels, test_probs)
    after = expected_calibration_error(test_labels, apply_temperature(test_probs, temperature))
    assert after < before / 3


def test_temperature_lowers_the_test_log_likelihood_it_was_fitted_for() -> None:
    labels, probs = sample(3000, seed=8, temperature=0.5)  # underconfident
    temperature = fit_temperature(labels, probs)
    assert temperature < 1
    test_labels, test_probs = sample(3000, seed=9, temperature=0.5)
    scaled = apply_temperature(test_probs, temperature)
    assert negative_log_likelihood(test_labels, scaled) < negative_log_likelihood(
        test_labels, test_probs
    )
    assert math.isnan(negative_log_likelihood(np.array([]), np.array([])))


def test_ensemble_members_are_scaled_before_their_mean() -> None:
    members = np.array([[0.9, 0.2], [0.6, 0.4]])
    expected = (apply_temperature(members[0], 2.0) + apply_temperature(members[1], 2.0)) / 2
    assert calibrated_ensemble(members, 2.0) == pytest.approx(expected)
    assert calibrated_ensemble(members[0], 2.0) == pytest.approx(apply_temperature(members[0], 2))


def prior_shifted_sample(n: int, seed: int, prevalence: float) -> tuple[np.ndarray, np.ndarray]:
    """What a model trained on balanced classes reports on data of another `prevalence`: the
    true log-odds are the model's plus log(prevalence / (1 - prevalence))."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    shift = math.log(prevalence / (1 - prevalence))
    return (rng.random(n) < expit(z + shift)).astype(int), expit(z)


def test_platt_recovers_a_prior_shift_that_a_temperature_cannot_fix() -> None:
    labels, probs = prior_shifted_sample(6000, seed=3, prevalence=0.3)
    temperature, bias = fit_platt(labels, probs)
    assert bias == pytest.approx(math.log(0.3 / 0.7), abs=0.12)
    assert temperature == pytest.approx(1.0, abs=0.1)
    test_labels, test_probs = prior_shifted_sample(6000, seed=4, prevalence=0.3)
    platt = apply_temperature(test_probs, temperature, bias)
    only_t = apply_temperature(test_probs, fit_temperature(labels, probs))
    assert abs(platt.mean() - test_labels.mean()) < 0.02 < 0.1 < abs(only_t.mean() - 0.3)
    assert expected_calibration_error(test_labels, platt) < 0.03
    assert expected_calibration_error(test_labels, only_t) > 0.08
    assert negative_log_likelihood(test_labels, platt) < negative_log_likelihood(
        test_labels, only_t
    )
    assert np.array_equal(np.argsort(platt), np.argsort(test_probs))  # ranking kept


def test_calibration_methods_and_their_degenerate_cases() -> None:
    labels, probs = prior_shifted_sample(2000, seed=5, prevalence=0.3)
    assert fit_calibration(labels, probs, "none") == (1.0, 0.0)
    temperature, bias = fit_calibration(labels, probs, "temperature")
    assert bias == 0.0 and temperature == fit_temperature(labels, probs)
    assert fit_calibration(labels, probs, "platt") == fit_platt(labels, probs)
    assert fit_platt(np.zeros(10, int), np.linspace(0.1, 0.9, 10)) == (1.0, 0.0)
    # a model whose ranking is inverted on validation keeps its (bounded, positive) temperature
    noise_t, _ = fit_platt(labels, 1 - probs)
    assert 0.05 <= noise_t <= 20.0
    with pytest.raises(ValueError, match=r"evaluation\.calibration: unknown method 'isotonic'"):
        fit_calibration(labels, probs, "isotonic")


def fus2net_spec(n_members: int, **calibration: float | str) -> ModelSpec:
    return ModelSpec(
        model={"name": "fus2net"},
        in_chans=3,
        image_size=128,
        class_names=["benign", "malignant"],
        members=[Member(f"fold_{k}/model.pt", k) for k in range(n_members)],
        **calibration,  # type: ignore[arg-type]
    )


def test_spec_calibrates_each_member_before_the_mean() -> None:
    spec = fus2net_spec(2, temperature=2.0, calibration_bias=-0.5)
    members = np.array([[0.2, 0.9], [0.4, 0.7]])
    expected = (
        apply_temperature(members[0], 2.0, -0.5) + apply_temperature(members[1], 2.0, -0.5)
    ) / 2
    assert spec.calibrated(members) == pytest.approx(expected)


def test_temperature_keeps_ranking_and_the_half_point() -> None:
    probs = np.array([0.01, 0.3, 0.5, 0.7, 0.999])
    scaled = apply_temperature(probs, 2.5)
    assert np.all(np.diff(scaled) > 0)
    assert scaled[2] == pytest.approx(0.5)
    assert apply_temperature(probs, 1.0) == pytest.approx(probs, abs=1e-6)
    assert np.all(np.isfinite(apply_temperature(np.array([0.0, 1.0]), 0.5)))
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(probs, 0.0)


def test_temperature_without_both_classes_is_one() -> None:
    assert fit_temperature(np.ones(10, int), np.linspace(0.1, 0.9, 10)) == 1.0


def test_sensitivity_threshold_is_the_highest_reaching_the_target() -> None:
    labels, probs = sample(400, seed=3)
    threshold = threshold_for_sensitivity(labels, probs, 0.95)
    sensitivity = lambda t: np.mean(probs[labels == 1] >= t)  # noqa: E731
    assert sensitivity(threshold) >= 0.95
    higher = np.unique(probs[probs > threshold])
    assert sensitivity(higher[0]) < 0.95  # the next threshold up misses the target


def test_youden_threshold_matches_brute_force() -> None:
    labels, probs = sample(300, seed=4)
    candidates = np.unique(probs)
    j = [np.mean(probs[labels == 1] >= t) + np.mean(probs[labels == 0] < t) - 1 for t in candidates]
    assert youden_threshold(labels, probs) == pytest.approx(candidates[int(np.argmax(j))])


def test_operating_points_metric_names_and_values() -> None:
    labels, probs = sample(300, seed=5)
    points = choose_operating_points(labels, probs, target_sensitivity=0.9)
    assert [p.name for p in points] == ["sens90", "youden"]
    assert points[0].chosen_on["sensitivity"] >= 0.9
    test_labels, test_probs = sample(200, seed=6)
    metrics = operating_point_metrics(points, test_labels, test_probs)
    for name in ("sens90", "youden"):
        assert f"operating/{name}_threshold" in metrics
        for key in ("oof_sensitivity", "test_sensitivity", "test_specificity"):
            assert 0.0 <= metrics[f"operating/{name}_{key}"] <= 1.0
    # a lower threshold never loses sensitivity
    assert metrics["operating/sens90_threshold"] <= metrics["operating/youden_threshold"]
    assert sensitivity_name(0.95) == "sens95"
    with pytest.raises(ValueError, match="target_sensitivity"):
        sensitivity_name(1.5)
    with pytest.raises(ValueError, match="benign and malignant"):
        choose_operating_points(np.ones(5, int), np.linspace(0, 1, 5))


def test_reliability_diagram_is_written(tmp_path: Path) -> None:
    labels, probs = sample(200, seed=7)
    path = save_reliability_diagram(
        {"val": (labels, probs), "test": (labels[:50], probs[:50])}, tmp_path / "r.png", "t"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_card_states_metrics_calibration_and_limits() -> None:
    spec = fus2net_spec(1, calibration_method="platt")
    card = render_model_card(
        ModelCardFacts(
            run_id="abc",
            spec=spec,
            dataset={"name": "busi", "n_images": 647, "per_class": {"benign": 437}},
            split={"folds": 5, "n_test": 130, "n_train_pool": 517, "seed": 42},
            cv={"auc_mean": 0.9, "auc_std": 0.02},
            test={"auc": 0.91, "sensitivity": math.nan},
            test_ci={"auc": (0.85, 0.96)},
            calibration={
                "test_ece": 0.08,
                "temperature": 1.7,
                "bias": -0.6,
                "test_ece_calibrated": 0.04,
                "test_mean_prob": 0.45,
                "test_mean_prob_calibrated": 0.34,
                "test_prevalence": 0.33,
            },
            operating={
                "operating/sens95_threshold": 0.2,
                "operating/sens95_test_sensitivity": 0.93,
            },
            localization={"n_images": 32.0, "cam_energy_in_mask": 0.41, "pointing_game": 0.6},
            external={"busbra": {"auc": 0.8, "n_images": 1875.0, "patient_auc": 0.82}},
        )
    )
    assert "Not a medical device" in card
    assert "| auc | 0.900 +- 0.020 | 0.910 | 0.850 - 0.960 |" in card
    assert "(platt, p' = sigmoid(logit(p) / T + b)): T = 1.70, b = -0.60" in card
    assert "| sens95 | 0.200 |" in card
    assert (
        "test 0.450 before and 0.340 after recalibration, vs observed malignant share 0.330" in card
    )
    assert "0.410 of the Grad-CAM energy" in card and "| busbra | 1875 |" in card
    assert "| sensitivity | n/a +- n/a | n/a |" in card


def test_probability_helpers_agree_with_scipy() -> None:
    probs = np.array([0.2, 0.8])
    assert apply_temperature(probs, 2.0) == pytest.approx(expit(logit(probs) / 2.0))
