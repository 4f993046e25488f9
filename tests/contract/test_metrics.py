"""A task's metrics against hand-computed values, and the confusion-matrix form the bootstrap uses."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from ftcompare.contract import (
    METRICS,
    ConfigError,
    all_scores,
    confusion,
    from_confusion,
    macro_precision_recall,
    score,
)

# Binary: 3 true positives, 1 false negative, 1 false positive, 5 true negatives.
BINARY_LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
BINARY_PREDICTIONS = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
# Three classes; confusion rows (labels) [1 1 0], [0 2 0], [1 0 1].
MULTI_LABELS = [0, 0, 1, 1, 2, 2]
MULTI_PREDICTIONS = [0, 1, 1, 1, 2, 0]


def test_binary_metrics_by_hand():
    scores = all_scores(BINARY_LABELS, BINARY_PREDICTIONS, num_labels=2)
    assert list(scores) == list(METRICS)
    assert scores["accuracy"] == pytest.approx(0.8)
    assert scores["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # positive class: 0.75
    assert scores["macro_f1"] == pytest.approx((0.75 + 2 * 5 / (2 * 5 + 1 + 1)) / 2)
    # (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (15 - 1) / sqrt(4 * 4 * 6 * 6)
    assert scores["mcc"] == pytest.approx(14 / 24)


def test_multiclass_metrics_by_hand_and_no_positive_class_f1():
    scores = all_scores(MULTI_LABELS, MULTI_PREDICTIONS, num_labels=3)
    assert set(scores) == {"accuracy", "macro_f1", "mcc"}
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["macro_f1"] == pytest.approx((2 / 4 + 4 / 5 + 2 / 3) / 3)
    # Gorodkin: (c s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)), c=4, s=6, p=(2,3,1), t=(2,2,2)
    assert scores["mcc"] == pytest.approx((4 * 6 - 12) / math.sqrt((36 - 14) * (36 - 12)))
    with pytest.raises(ConfigError, match="binary tasks; this task has 3 classes: use macro_f1"):
        score("f1", MULTI_LABELS, MULTI_PREDICTIONS, num_labels=3)


def test_a_class_never_seen_counts_in_macro_f1_and_constant_predictions_have_mcc_zero():
    # num_labels 3 but class 2 never occurs: its F1 is 0 and still averaged in.
    assert score("macro_f1", [0, 1], [0, 1], num_labels=3) == pytest.approx(2 / 3)
    assert score("mcc", [0, 1, 1, 0], [1, 1, 1, 1], num_labels=2) == 0.0


def test_unknown_metric_is_a_config_error():
    with pytest.raises(ConfigError, match="data.metric = 'auc' is not allowed"):
        score("auc", [0, 1], [0, 1], num_labels=2)


@pytest.mark.parametrize("num_labels", [2, 3])
def test_every_metric_agrees_with_scikit_learn(num_labels):
    from sklearn import metrics as sk

    reference = {
        "accuracy": sk.accuracy_score,
        "macro_f1": lambda y, p: sk.f1_score(y, p, labels=list(range(num_labels)), average="macro", zero_division=0),
        "f1": lambda y, p: sk.f1_score(y, p, pos_label=1, average="binary", zero_division=0),
        "mcc": sk.matthews_corrcoef,
    }
    rng = np.random.default_rng(0)
    cases = [(rng.integers(0, num_labels, 50), rng.integers(0, num_labels, 50)) for _ in range(20)]
    cases.append((np.zeros(5, int), np.zeros(5, int)))  # one class only: ratios of 0/0
    matrices = np.stack([confusion(labels, predictions, num_labels=num_labels) for labels, predictions in cases])
    with warnings.catch_warnings():  # scikit-learn warns of the one-class case's MCC; it is 0
        warnings.simplefilter("ignore", UserWarning)
        for metric in all_scores(*cases[0], num_labels=num_labels):
            expected = [reference[metric](labels, predictions) for labels, predictions in cases]
            got = [score(metric, labels, predictions, num_labels=num_labels) for labels, predictions in cases]
            np.testing.assert_allclose(got, expected, atol=1e-12, err_msg=metric)
            np.testing.assert_allclose(from_confusion(metric, matrices), expected, atol=1e-12, err_msg=metric)
    for (labels, predictions), matrix in zip(cases, matrices):
        np.testing.assert_array_equal(matrix, sk.confusion_matrix(labels, predictions, labels=list(range(num_labels))))
        precision, recall, _, _ = sk.precision_recall_fscore_support(
            labels, predictions, labels=list(range(num_labels)), average="macro", zero_division=0
        )
        assert macro_precision_recall(matrix) == pytest.approx((precision, recall), abs=1e-12)


def test_labels_outside_the_classes_are_refused():
    with pytest.raises(ValueError, match=r"labels range over \[0, 2\]; classes are 0..1"):
        score("accuracy", [0, 2], [0, 1], num_labels=2)
