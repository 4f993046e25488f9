"""Which differences between strategies are real: paired statistics over the same test reviews.

Every strategy is evaluated on the same test reviews, so two strategies are compared
review by review, not through their separate accuracies: most of the test set's
sampling noise is shared and cancels. Per review, each strategy's correctness is
averaged over the seeds both strategies ran (a review is the independent unit; seeds
re-measure the same reviews). Then:

- the difference in accuracy is the mean of those per-review differences, in points;
- its 95% interval comes from a bootstrap over reviews (the same resampled reviews for
  every seed, so their correlation is kept);
- its p-value is an exact sign test on the reviews where the two differ: McNemar's exact
  test when there is one seed, its natural extension to several;
- p-values across strategies are Holm-adjusted (the family is every strategy against
  the baseline).

A task whose primary metric is not accuracy (macro-F1, F1, MCC: ftcompare.metrics) is not
a mean over reviews, so the sign test does not apply: `paired_bootstrap` resamples the
test reviews jointly for both strategies and every seed, rescoring each resample, for the
difference's interval and a two-sided p-value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_REPLICATES = 10_000  # the interval's ends move by < 0.05 points between reruns at 25k reviews
ALPHA = 0.05


@dataclasses.dataclass(frozen=True, kw_only=True)
class PairedComparison:
    """A strategy against the baseline over the same reviews and the seeds both ran."""

    seeds: tuple[int, ...]
    n_reviews: int
    delta: float  # accuracy difference, strategy minus baseline, in points
    delta_ci_low: float
    delta_ci_high: float
    better: int  # reviews the strategy got right more often than the baseline
    worse: int  # and the other way round
    p_value: float
    metric: str = "accuracy"  # what delta is the difference of
    test: str = "exact sign test (McNemar)"  # what p_value comes from


def paired_comparison(
    strategy: Mapping[int, np.ndarray], baseline: Mapping[int, np.ndarray], *, seed: int = 0
) -> PairedComparison:
    """`strategy` and `baseline` map seed -> per-review correctness (bool arrays in one
    review order). Only seeds present in both are paired."""
    seeds = tuple(sorted(set(strategy) & set(baseline)))
    if not seeds:
        raise ValueError(f"no seed in common: strategy has {sorted(strategy)}, baseline has {sorted(baseline)}")
    lengths = {len(strategy[s]) for s in seeds} | {len(baseline[s]) for s in seeds}
    if len(lengths) != 1:
        raise ValueError(f"per-review results differ in length across runs: {sorted(lengths)}")
    diff = np.mean([strategy[s].astype(float) - baseline[s].astype(float) for s in seeds], axis=0)
    n = len(diff)
    better, worse = int((diff > 0).sum()), int((diff < 0).sum())
    p_value = stats.binomtest(better, better + worse, 0.5).pvalue if better + worse else 1.0
    low, high = _bootstrap_interval(diff, seed=seed)
    return PairedComparison(
        seeds=seeds,
        n_reviews=n,
        delta=100 * float(diff.mean()),
        delta_ci_low=100 * low,
        delta_ci_high=100 * high,
        better=better,
        worse=worse,
        p_value=float(p_value),
    )


def _bootstrap_interval(diff: np.ndarray, *, seed: int) -> tuple[float, float]:
    """Percentile interval of the mean of `diff` under resampling of reviews. The
    per-review differences take few distinct values (multiples of 1/seeds), so resampling
    n reviews is drawing how many land on each value: a multinomial, cheap at any n."""
    values, counts = np.unique(diff, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(diff), counts / len(diff), size=BOOTSTRAP_REPLICATES)
    means = draws @ values / len(diff)
    return float(np.quantile(means, ALPHA / 2)), float(np.quantile(means, 1 - ALPHA / 2))


BOOTSTRAP_TEST = "paired bootstrap"


def paired_bootstrap(
    metric: str,
    labels: np.ndarray,
    strategy: Mapping[int, np.ndarray],
    baseline: Mapping[int, np.ndarray],
    *,
    num_labels: int,
    seed: int = 0,
    replicates: int = BOOTSTRAP_REPLICATES,
) -> PairedComparison:
    """`metric` of the strategy minus the baseline's, each averaged over the seeds both ran,
    in points, with a 95% percentile interval and a two-sided p-value from resampling the
    test reviews (the same reviews for both sides and every seed, so their pairing is kept).
    `strategy` and `baseline` map seed -> predicted labels in the order of `labels`.

    The p-value is the share of resampled differences at least as far from the observed one
    as the observed one is from zero (the bootstrap distribution shifted to the null of no
    difference), (1 + count) / (1 + replicates): never 0, and 1 where the sides agree."""
    from ftcompare.metrics import check_metric, from_confusion

    check_metric(metric, num_labels=num_labels)
    seeds = tuple(sorted(set(strategy) & set(baseline)))
    if not seeds:
        raise ValueError(f"no seed in common: strategy has {sorted(strategy)}, baseline has {sorted(baseline)}")
    labels = np.asarray(labels)
    columns = [strategy[s] for s in seeds] + [baseline[s] for s in seeds]
    if {len(column) for column in columns} != {len(labels)}:
        raise ValueError(f"predictions differ in length from the {len(labels)} labels")
    # Reviews with the same label and the same predictions everywhere are interchangeable:
    # a resample is how many land on each such pattern (a multinomial), cheap at any n.
    patterns, counts = np.unique(np.stack([labels, *columns], axis=1), axis=0, return_counts=True)
    cells = num_labels * num_labels
    # Per side and seed, each pattern's cell of the confusion matrix, one-hot: (runs, patterns, cells).
    onehot = np.eye(cells)[patterns[:, :1].T * num_labels + patterns[:, 1:].T]
    k = len(seeds)

    def deltas(weights: np.ndarray) -> np.ndarray:
        """Strategy minus baseline for resamples `weights` (replicates, patterns)."""
        matrices = np.einsum("bp,rpc->brc", weights, onehot).reshape(len(weights), 2 * k, num_labels, num_labels)
        scores = from_confusion(metric, matrices)
        return scores[:, :k].mean(axis=1) - scores[:, k:].mean(axis=1)

    observed = float(deltas(counts[None, :].astype(float))[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // (len(patterns) * 2 * k))
    resampled = np.concatenate(
        [
            deltas(rng.multinomial(len(labels), counts / len(labels), size=min(chunk, replicates - done)))
            for done in range(0, replicates, chunk)
        ]
    )
    p_value = (1 + np.count_nonzero(np.abs(resampled - observed) >= abs(observed) - 1e-12)) / (1 + replicates)
    correct = np.mean([strategy[s] == labels for s in seeds], axis=0) - np.mean(
        [baseline[s] == labels for s in seeds], axis=0
    )
    return PairedComparison(
        seeds=seeds,
        n_reviews=len(labels),
        delta=100 * observed,
        delta_ci_low=100 * float(np.quantile(resampled, ALPHA / 2)),
        delta_ci_high=100 * float(np.quantile(resampled, 1 - ALPHA / 2)),
        better=int((correct > 0).sum()),
        worse=int((correct < 0).sum()),
        p_value=float(min(1.0, p_value)),
        metric=metric,
        test=BOOTSTRAP_TEST,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: family-wise error at most alpha for any alpha."""
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """95% Student t interval of the mean of `values` (at least two)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        raise ValueError(f"an interval over seeds needs at least two values, got {len(values)}")
    half = stats.t.ppf(1 - ALPHA / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)
