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

A task whose primary metric is not accuracy (macro-F1, F1, MCC: ftcompare.contract.metrics) is not
a mean over reviews, so the sign test does not apply: `paired_bootstrap` resamples the
test reviews jointly for both strategies and every seed, rescoring each resample, for the
difference's interval and a two-sided p-value.

With two or more seeds each side's mean over seeds varies with the seeds as well as with
the test rows, and a test over rows alone would call a seed's luck a method's: then
`paired_bootstrap` resamples each side's seeds (with replacement) and the test rows in every
replicate, for every metric, accuracy included (`SEED_BOOTSTRAP_TEST`).

What a comparison concludes is its `Verdict`: better or worse (Holm-significant), equivalent
(the 90% interval, two one-sided 5% tests, inside ± the margin), inconclusive (neither), or
did not learn (`learned`: a run no better than labelling every row with the majority class).
`detectable_difference` is the smallest difference the test finds with 80% power.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from ftcompare.contract import Verdict

BOOTSTRAP_REPLICATES = 10_000  # the interval's ends move by < 0.05 points between reruns at 25k reviews
ALPHA = 0.05
# report.equivalence_margin's default (config/config.yaml says why), for callers without a config.
DEFAULT_EQUIVALENCE_MARGIN = 1.0
# The power at which `detectable_difference` is stated: the convention (Cohen) for planning a study.
POWER = 0.80
# A run that puts at least this share of the test rows in one class, where fewer of the labels
# are that class, answers by rote: 90% leaves room for a skewed but working classifier on a
# balanced task (a working one rarely goes past 70% there), and flags IMDB's 185-of-200 LoRA.
NEARLY_ONE_CLASS = 0.90


def verdict(*, p_holm: float, delta: float, ci90_low: float, ci90_high: float, margin: float) -> Verdict:
    """Better or worse where the Holm-adjusted p is below ALPHA (the sign of `delta` says
    which); else equivalent where the 90% interval of the difference lies inside ±`margin`
    points (two one-sided tests at 5%, Schuirmann's TOST); else inconclusive."""
    if p_holm < ALPHA:
        return Verdict.BETTER if delta > 0 else Verdict.WORSE
    if margin > 0 and -margin < ci90_low and ci90_high < margin:
        return Verdict.EQUIVALENT
    return Verdict.INCONCLUSIVE


def detectable_difference(standard_error: float, *, tests: int = 1, power: float = POWER) -> float:
    """The smallest true difference (in the units of `standard_error`) that a two-sided test
    at ALPHA, Bonferroni-split over `tests` (Holm's strictest step), finds with `power`:
    (z[1 - ALPHA / (2 tests)] + z[power]) x SE, the normal approximation. SE is the bootstrap
    standard error of the difference (over test rows, and seeds where there are several),
    so it measures the study's size as it is: its test rows, its seeds, how often two
    strategies disagree."""
    z = stats.norm.ppf(1 - ALPHA / (2 * max(1, tests))) + stats.norm.ppf(power)
    return float(z * standard_error)


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
    # The 90% interval (the equivalence test's) and the bootstrap standard error, in points.
    delta_ci90_low: float = float("nan")
    delta_ci90_high: float = float("nan")
    standard_error: float = float("nan")
    interval: str = "bootstrap over test rows"  # what the intervals resample


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
    means = _bootstrap_means(diff, seed=seed)
    return PairedComparison(
        seeds=seeds,
        n_reviews=n,
        delta=100 * float(diff.mean()),
        better=better,
        worse=worse,
        p_value=float(p_value),
        **_intervals(100 * means),
    )


def _bootstrap_means(diff: np.ndarray, *, seed: int) -> np.ndarray:
    """The mean of `diff` under resampling of reviews. The per-review differences take few
    distinct values (multiples of 1/seeds), so resampling n reviews is drawing how many land
    on each value: a multinomial, cheap at any n."""
    values, counts = np.unique(diff, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(diff), counts / len(diff), size=BOOTSTRAP_REPLICATES)
    return draws @ values / len(diff)


def _intervals(resampled: np.ndarray) -> dict[str, float]:
    """The 95% and 90% percentile intervals and the standard error of resampled differences."""
    low, high, low90, high90 = np.quantile(resampled, [ALPHA / 2, 1 - ALPHA / 2, ALPHA, 1 - ALPHA])
    return {
        "delta_ci_low": float(low),
        "delta_ci_high": float(high),
        "delta_ci90_low": float(low90),
        "delta_ci90_high": float(high90),
        "standard_error": float(np.std(resampled, ddof=1)),
    }


BOOTSTRAP_TEST = "paired bootstrap"
SEED_BOOTSTRAP_TEST = "paired bootstrap over seeds and test rows"


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

    With two or more seeds, each replicate also draws each side's seeds with replacement
    (independently: the two sides' runs share a seed number, not a draw) and averages the
    drawn seeds' scores, so the interval and p-value carry the spread over seeds as well as
    over rows (`test` = SEED_BOOTSTRAP_TEST). The rows still resample once per replicate for
    every run, as a multinomial over the distinct (label, predictions) patterns.

    The p-value is the share of resampled differences at least as far from the observed one
    as the observed one is from zero (the bootstrap distribution shifted to the null of no
    difference), (1 + count) / (1 + replicates): never 0, and 1 where the sides agree."""
    from ftcompare.contract import check_metric, from_confusion

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

    def deltas(weights: np.ndarray, seed_weights: np.ndarray | None = None) -> np.ndarray:
        """Strategy minus baseline for resamples `weights` (replicates, patterns); each side's
        seeds weighted by `seed_weights` (replicates, 2k: how often each was drawn), else alike."""
        matrices = np.einsum("bp,rpc->brc", weights, onehot).reshape(len(weights), 2 * k, num_labels, num_labels)
        scores = from_confusion(metric, matrices)
        if seed_weights is not None:
            scores = scores * seed_weights
        return scores[:, :k].mean(axis=1) - scores[:, k:].mean(axis=1)

    observed = float(deltas(counts[None, :].astype(float))[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // (len(patterns) * 2 * k))

    def replicate(size: int) -> np.ndarray:
        rows = rng.multinomial(len(labels), counts / len(labels), size=size)
        if k < 2:
            return deltas(rows)
        drawn = np.concatenate([rng.multinomial(k, np.full(k, 1 / k), size=size) for _ in range(2)], axis=1)
        return deltas(rows, drawn)

    resampled = np.concatenate([replicate(min(chunk, replicates - done)) for done in range(0, replicates, chunk)])
    p_value = (1 + np.count_nonzero(np.abs(resampled - observed) >= abs(observed) - 1e-12)) / (1 + replicates)
    correct = np.mean([strategy[s] == labels for s in seeds], axis=0) - np.mean(
        [baseline[s] == labels for s in seeds], axis=0
    )
    return PairedComparison(
        seeds=seeds,
        n_reviews=len(labels),
        delta=100 * observed,
        better=int((correct > 0).sum()),
        worse=int((correct < 0).sum()),
        p_value=float(min(1.0, p_value)),
        metric=metric,
        test=BOOTSTRAP_TEST if k < 2 else SEED_BOOTSTRAP_TEST,
        interval="bootstrap over test rows" if k < 2 else "bootstrap over seeds and test rows",
        **_intervals(100 * resampled),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Learning:
    """Whether one run learned: its test score against the majority-class predictor's."""

    learned: bool
    reason: str | None  # why it did not, in words; None where it learned
    p_value: float  # one-sided: the run scores no higher than the majority class
    majority_class: int
    majority_share: float  # of the test labels
    majority_score: float  # the metric of labelling every test row with the majority class
    top_class: int  # the class the run predicts most
    top_share: float  # of its predictions


def majority_class(labels: np.ndarray, *, num_labels: int) -> tuple[int, float]:
    """The most common test label (the lowest where several tie) and its share."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_labels)
    return int(np.argmax(counts)), float(counts.max() / counts.sum())


def learned(
    metric: str,
    labels: np.ndarray,
    predictions: np.ndarray,
    *,
    num_labels: int,
    seed: int = 0,
    replicates: int = BOOTSTRAP_REPLICATES,
    label_names: Sequence[str] | None = None,
) -> Learning:
    """Whether a run learned anything: its test score significantly above what a label-blind
    answer scores (one-sided, at ALPHA), and no one class for NEARLY_ONE_CLASS of its
    predictions where fewer of the labels are that class.

    - accuracy: the exact binomial test of the rows right against the majority's share (no
      label-blind answer scores more: guessing with any class frequencies scores less);
    - macro-F1, F1, MCC: a bootstrap over test rows (a multinomial over the confusion
      matrix's cells) of the run's score minus the better of two label-blind answers on the
      same resample: the best one-class answer (for F1, always the positive class can beat
      the majority) and chance, the run's own class frequencies with no relation to the
      labels (the expected confusion matrix at independence; MCC 0). Guessing at random
      scores a balanced task's macro-F1 of 0.5, above the majority class's 0.33, so the
      majority alone is too low a floor for these metrics.
      p = (1 + resamples where the difference is <= 0) / (1 + replicates).

    `label_names`: the classes' names, for the reason in words (else their numbers)."""
    from ftcompare.contract import check_metric, confusion, from_confusion

    check_metric(metric, num_labels=num_labels)
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    matrix = confusion(labels, predictions, num_labels=num_labels)
    n = int(matrix.sum())
    majority, share = majority_class(labels, num_labels=num_labels)

    def constant(matrices: np.ndarray, label: int) -> np.ndarray:
        """Confusion matrices of labelling every row `label`, from `matrices`' label counts."""
        out = np.zeros(matrices.shape, dtype=float)
        out[..., label] = matrices.sum(axis=-1)
        return out

    def floor(matrices: np.ndarray) -> np.ndarray:
        """The best label-blind score for `matrices`' labels and predicted class frequencies."""
        matrices = np.asarray(matrices, dtype=float)
        rows, columns = matrices.sum(axis=-1), matrices.sum(axis=-2)
        chance = rows[..., :, None] * columns[..., None, :] / matrices.sum(axis=(-2, -1))[..., None, None]
        blind = [from_confusion(metric, constant(matrices, label)) for label in range(num_labels)]
        return np.maximum(np.max(blind, axis=0), from_confusion(metric, chance))

    majority_score = float(from_confusion(metric, constant(matrix, majority)))
    if metric == "accuracy":
        p_value = float(stats.binomtest(int(np.trace(matrix)), n, share, alternative="greater").pvalue)
    elif from_confusion(metric, matrix) <= floor(matrix) + 1e-12:
        p_value = 1.0
    else:
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(n, matrix.ravel() / n, size=replicates).reshape(replicates, num_labels, num_labels)
        gain = from_confusion(metric, draws) - floor(draws)
        p_value = float((1 + np.count_nonzero(gain <= 1e-12)) / (1 + replicates))
    predicted = matrix.sum(axis=0)
    top = int(np.argmax(predicted))
    top_share = float(predicted[top] / n)
    label_share = float(matrix.sum(axis=1)[top] / n)
    reasons = []
    if p_value >= ALPHA:
        level = 100 * (majority_score if metric == "accuracy" else float(floor(matrix)))
        against = "the majority class's" if metric == "accuracy" else "a label-blind answer's"
        reasons.append(f"not significantly above {against} {level:.1f} (p = {p_value:.2g})")
    if top_share >= NEARLY_ONE_CLASS and label_share < NEARLY_ONE_CLASS:
        name = label_names[top] if label_names and top < len(label_names) else top
        reasons.append(f"predicts class {name} for {100 * top_share:.1f}% of test rows")
    return Learning(
        learned=not reasons,
        reason="; ".join(reasons) or None,
        p_value=p_value,
        majority_class=majority,
        majority_share=share,
        majority_score=majority_score,
        top_class=top,
        top_share=top_share,
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
