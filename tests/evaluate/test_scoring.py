"""Tests for ftcompare.evaluate.scoring: its metrics, intervals and prediction tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ftcompare.evaluate import Z_95, classification_metrics, predictions_frame, softmax, wilson_interval

TOL = 1e-4


def wilson_by_quadratic(successes: int, trials: int, z: float) -> tuple[float, float]:
    """The Wilson bounds as the roots p of (p_hat - p)^2 = z^2 p (1 - p) / n, i.e.
    (1 + z^2/n) p^2 - (2 p_hat + z^2/n) p + p_hat^2 = 0: an independent derivation."""
    p_hat = successes / trials
    a = 1 + z * z / trials
    b = -(2 * p_hat + z * z / trials)
    c = p_hat * p_hat
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


# --- wilson_interval ----------------------------------------------------------------------


def test_z_is_the_95_percent_normal_quantile() -> None:
    assert 0.5 * math.erfc(-Z_95 / math.sqrt(2)) == pytest.approx(0.975, abs=1e-12)


def test_wilson_known_values() -> None:
    low, high = wilson_interval(940, 1000)
    assert low == pytest.approx(0.92353, abs=TOL)
    assert high == pytest.approx(0.95310, abs=TOL)
    low, high = wilson_interval(5, 10)
    assert (low, high) == (pytest.approx(0.23659, abs=TOL), pytest.approx(0.76341, abs=TOL))
    low, high = wilson_interval(81, 263)  # Newcombe (1998), Table I: 0.2553 to 0.3662
    assert (low, high) == (pytest.approx(0.2553, abs=TOL), pytest.approx(0.3662, abs=TOL))


@pytest.mark.parametrize(("successes", "trials"), [(940, 1000), (1, 3), (12, 50), (24_000, 25_000), (7, 7)])
def test_wilson_matches_quadratic_roots(successes: int, trials: int) -> None:
    expected = wilson_by_quadratic(successes, trials, Z_95)
    assert wilson_interval(successes, trials) == pytest.approx(expected, abs=TOL)
    # And for another confidence level.
    assert wilson_interval(successes, trials, z=1.0) == pytest.approx(
        wilson_by_quadratic(successes, trials, 1.0), abs=TOL
    )


@pytest.mark.parametrize("trials", [1, 10, 500])
def test_wilson_edges_stay_within_unit_interval(trials: int) -> None:
    z2 = Z_95 * Z_95
    low, high = wilson_interval(0, trials)
    assert 0.0 <= low < 1e-12
    assert high == pytest.approx(z2 / (trials + z2), abs=TOL)  # closed form at 0 successes
    assert 0.0 < high < 1.0
    low, high = wilson_interval(trials, trials)
    assert 1.0 - 1e-12 < high <= 1.0
    assert low == pytest.approx(trials / (trials + z2), abs=TOL)
    assert 0.0 < low < 1.0


def test_wilson_is_symmetric_and_contains_the_estimate() -> None:
    low, high = wilson_interval(30, 100)
    mirror_low, mirror_high = wilson_interval(70, 100)
    assert low == pytest.approx(1 - mirror_high, abs=1e-12)
    assert high == pytest.approx(1 - mirror_low, abs=1e-12)
    assert low < 0.3 < high
    assert wilson_interval(300, 1000)[1] - wilson_interval(300, 1000)[0] < high - low


@pytest.mark.parametrize(("successes", "trials"), [(0, 0), (1, 0), (-1, 10), (11, 10), (0, -5)])
def test_wilson_rejects_bad_inputs(successes: int, trials: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(successes, trials)


# --- classification_metrics ---------------------------------------------------------------


def test_classification_metrics_by_hand() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    predictions = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 2])
    metrics = classification_metrics(labels=labels, predictions=predictions, num_labels=3)
    # Rows are the true label, columns the prediction.
    assert metrics["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 0, 3]]
    assert metrics["accuracy"] == pytest.approx(0.7)
    # precision per class 2/3, 2/3, 3/4; recall 2/4, 2/3, 3/3; F1 4/7, 2/3, 6/7.
    assert metrics["precision"] == pytest.approx(25 / 36)
    assert metrics["recall"] == pytest.approx(13 / 18)
    assert metrics["macro_f1"] == pytest.approx(44 / 63)
    assert "f1" not in metrics  # the positive class's F1: binary tasks only
    # MCC: c=7, s=10, predicted (3, 3, 4), true (4, 3, 3): (70 - 33) / sqrt((100 - 34) (100 - 34))
    assert metrics["mcc"] == pytest.approx(37 / 66)
    assert metrics["n_test"] == 10
    assert metrics["labels"] == [0, 1, 2]
    low, high = wilson_interval(7, 10)
    assert (metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]) == (low, high)
    assert all(isinstance(metrics[k], float) for k in ("accuracy", "macro_f1", "mcc", "precision", "recall"))


def test_confusion_matrix_is_not_transposed() -> None:
    # Every true 0 predicted as 1: the count belongs in row 0, column 1.
    metrics = classification_metrics(labels=np.array([0, 0, 0, 1]), predictions=np.array([1, 1, 1, 1]), num_labels=2)
    assert metrics["confusion_matrix"] == [[0, 3], [0, 1]]
    assert metrics["accuracy"] == pytest.approx(0.25)
    # precision: class 0 never predicted -> 0, class 1 = 1/4; recall: 0, 1.
    assert metrics["precision"] == pytest.approx(0.125)
    assert metrics["recall"] == pytest.approx(0.5)
    assert metrics["macro_f1"] == pytest.approx((0 + 2 * 0.25 * 1 / 1.25) / 2)
    assert metrics["f1"] == pytest.approx(2 * 0.25 * 1 / 1.25)  # the positive class's (label 1)
    assert metrics["mcc"] == 0.0  # one class predicted for every review


def test_classes_absent_from_the_test_set_count_in_the_macro_average() -> None:
    metrics = classification_metrics(labels=np.array([0, 1, 1]), predictions=np.array([0, 1, 1]), num_labels=3)
    assert metrics["accuracy"] == 1.0
    assert metrics["confusion_matrix"] == [[1, 0, 0], [0, 2, 0], [0, 0, 0]]
    assert metrics["macro_f1"] == pytest.approx(2 / 3)


# --- softmax and predictions_frame -------------------------------------------------------


def test_softmax_values_and_stability() -> None:
    probabilities = softmax(np.array([[0.0, math.log(3.0)], [1000.0, 0.0], [-1000.0, -1000.0]]))
    np.testing.assert_allclose(probabilities[0], [0.25, 0.75], atol=1e-12)
    np.testing.assert_allclose(probabilities[1], [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(probabilities[2], [0.5, 0.5], atol=1e-12)
    assert np.isfinite(probabilities).all()


def test_predictions_frame() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(50, 3)).astype(np.float32)
    labels = rng.integers(0, 3, size=50)
    frame = predictions_frame(labels=labels, logits=logits)
    assert list(frame.columns) == ["row", "label", "prediction", "prob_0", "prob_1", "prob_2"]
    assert frame["row"].tolist() == list(range(50))
    assert frame["label"].tolist() == labels.tolist()
    probabilities = frame[["prob_0", "prob_1", "prob_2"]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert (probabilities >= 0).all()
    np.testing.assert_array_equal(frame["prediction"].to_numpy(), logits.argmax(axis=1))
    np.testing.assert_array_equal(frame["prediction"].to_numpy(), probabilities.argmax(axis=1))


def test_predictions_frame_by_hand() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    frame = predictions_frame(labels=np.array([0, 0]), logits=logits)
    assert frame["prediction"].tolist() == [0, 1]
    expected = 1 / (1 + math.exp(-2.0))
    assert frame["prob_0"].tolist() == pytest.approx([expected, 1 - expected])
