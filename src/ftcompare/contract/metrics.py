"""A task's metrics: its primary one (the config's `data.metric`) and every other one a record keeps.

- `accuracy`: the share of rows labelled right (the default);
- `macro_f1`: the F1 of each class, averaged with equal weight (a rare class counts as much
  as a common one);
- `f1`: the F1 of the positive class (label 1), for binary tasks only (GLUE's MRPC and QQP);
- `mcc`: Matthews' correlation between labels and predictions, in [-1, 1], 0 for chance
  or a constant prediction (GLUE's CoLA, whose classes are unbalanced).

Each is computed from the confusion matrix (`from_confusion`), vectorised over any leading
axes: `score` and `all_scores` for one set of labels and predictions, the paired bootstrap
(ftcompare.report.stats) for thousands of resampled test sets. The numbers are scikit-learn's
(tests/contract/test_metrics.py compares them), without its import: two seconds of every training
and evaluation job. Torch-free: the Snakefile reads records (ftcompare.contract.records) while it
builds the job graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ftcompare.contract.errors import ConfigError

METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "f1", "mcc")
LABELS = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "f1": "F1 (positive class)",
    "mcc": "MCC",
}


def check_metric(metric: str, *, num_labels: int) -> None:
    """ConfigError where `metric` is unknown or does not apply to a task of `num_labels` classes."""
    if metric not in METRICS:
        raise ConfigError(f"data.metric = {metric!r} is not allowed; choose one of {list(METRICS)}")
    if metric == "f1" and num_labels != 2:
        raise ConfigError(
            f"data.metric = 'f1' is the F1 of the positive class, for binary tasks; this task has {num_labels} "
            "classes: use macro_f1 (or accuracy, mcc)"
        )


def applicable(num_labels: int) -> tuple[str, ...]:
    """The metrics a task of `num_labels` classes has (f1 only where binary)."""
    return tuple(metric for metric in METRICS if metric != "f1" or num_labels == 2)


def score(
    metric: str, labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray, *, num_labels: int
) -> float:
    """`metric` of `predictions` against `labels` (integers 0..num_labels-1), as a float,
    from their confusion matrix."""
    check_metric(metric, num_labels=num_labels)
    return float(from_confusion(metric, confusion(labels, predictions, num_labels=num_labels)))


def all_scores(
    labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray, *, num_labels: int
) -> dict[str, float]:
    """Every metric the task has (`applicable`), by name, from one confusion matrix."""
    matrix = confusion(labels, predictions, num_labels=num_labels)
    return {metric: float(from_confusion(metric, matrix)) for metric in applicable(num_labels)}


def confusion(
    labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray, *, num_labels: int
) -> np.ndarray:
    """The (num_labels, num_labels) count matrix: rows are labels, columns predictions."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape or labels.ndim != 1 or not len(labels):
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} must be equal, non-empty vectors")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.min() < 0 or values.max() >= num_labels:
            raise ValueError(f"{name} range over [{values.min()}, {values.max()}]; classes are 0..{num_labels - 1}")
    cells = labels.astype(np.int64) * num_labels + predictions.astype(np.int64)
    return np.bincount(cells, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def macro_precision_recall(matrix: np.ndarray) -> tuple[float, float]:
    """The macro-averaged precision and recall of a confusion matrix (rows labels), 0 for a
    class never predicted or never seen (scikit-learn's zero_division=0)."""
    matrix = np.asarray(matrix, dtype=float)
    tp = np.diagonal(matrix)
    predicted, true = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    return float(precision.mean()), float(recall.mean())


def from_confusion(metric: str, matrix: np.ndarray) -> np.ndarray:
    """`metric` of confusion matrices `matrix` (..., K, K), rows labels, columns predictions:
    an array of the leading shape. Zero where a ratio is 0/0, as scikit-learn's
    zero_division=0 and its MCC have it."""
    matrix = np.asarray(matrix, dtype=float)
    num_labels = matrix.shape[-1]
    check_metric(metric, num_labels=num_labels)
    total = matrix.sum(axis=(-2, -1))
    tp = np.diagonal(matrix, axis1=-2, axis2=-1)
    if metric == "accuracy":
        return tp.sum(axis=-1) / total
    true_counts, predicted_counts = matrix.sum(axis=-1), matrix.sum(axis=-2)
    if metric in ("macro_f1", "f1"):
        denominator = true_counts + predicted_counts  # 2tp + fp + fn
        per_class = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
        return per_class[..., 1] if metric == "f1" else per_class.mean(axis=-1)
    # Multi-class MCC (Gorodkin's R_K), as scikit-learn computes it.
    correct = tp.sum(axis=-1)
    numerator = correct * total - (predicted_counts * true_counts).sum(axis=-1)
    denominator = np.sqrt((total**2 - (predicted_counts**2).sum(axis=-1)) * (total**2 - (true_counts**2).sum(axis=-1)))
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
