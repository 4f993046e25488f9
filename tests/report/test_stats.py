"""Paired statistics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ftcompare.report import holm, mean_interval, paired_comparison


def outcomes(*, both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-review correctness of strategies a and b for a 2x2 discordance table."""
    a = np.array([True] * both + [True] * only_a + [False] * only_b + [False] * neither)
    b = np.array([True] * both + [False] * only_a + [True] * only_b + [False] * neither)
    return a, b


def test_one_seed_is_mcnemars_exact_test():
    # 2x2 table: 80 both right, 10 only a, 2 only b, 8 neither. McNemar's exact test:
    # P(X <= 2 | X ~ Bin(12, 1/2)) doubled = 2 * (1 + 12 + 66) / 4096 = 0.0385742...
    a, b = outcomes(both=80, only_a=10, only_b=2, neither=8)
    result = paired_comparison({0: a}, {0: b})
    assert result.p_value == pytest.approx(2 * (1 + 12 + 66) / 4096, rel=1e-12)
    assert (result.better, result.worse, result.n_reviews) == (10, 2, 100)
    assert result.delta == pytest.approx(8.0)  # (90 - 82) / 100 in points
    assert result.delta_ci_low < 8.0 < result.delta_ci_high


def test_no_discordant_reviews_gives_p_one_and_a_point_interval():
    a, _ = outcomes(both=50, only_a=0, only_b=0, neither=50)
    result = paired_comparison({0: a, 1: a}, {0: a, 1: a})
    assert result.p_value == 1.0 and result.delta == 0.0
    assert result.delta_ci_low == result.delta_ci_high == 0.0


def test_seeds_are_averaged_within_each_review():
    # Two seeds. Review 0: a right twice, b once -> +0.5. Review 1: a once, b twice -> -0.5.
    # Review 2: both right twice -> 0. Reviews 3-9: a right in both seeds, b in neither -> +1.
    a = {0: np.array([1, 1, 1] + [1] * 7, bool), 1: np.array([1, 0, 1] + [1] * 7, bool)}
    b = {0: np.array([1, 1, 1] + [0] * 7, bool), 1: np.array([0, 1, 1] + [0] * 7, bool)}
    result = paired_comparison(a, b)
    assert result.seeds == (0, 1)
    assert (result.better, result.worse) == (8, 1)
    assert result.delta == pytest.approx(100 * (0.5 - 0.5 + 7) / 10)
    assert result.p_value == pytest.approx(2 * (1 + 9) / 512)  # sign test: 1 of 9 against


def test_only_common_seeds_are_paired_and_lengths_must_agree():
    a, b = outcomes(both=5, only_a=3, only_b=0, neither=2)
    assert paired_comparison({0: a, 7: a}, {0: b, 3: b}).seeds == (0,)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_comparison({1: a}, {2: b})
    with pytest.raises(ValueError, match="differ in length"):
        paired_comparison({0: a}, {0: b[:-1]})


def test_bootstrap_interval_covers_the_sampling_spread():
    # 1,000 reviews, a better on 60 and worse on 20: the interval of the difference
    # should be about +4 points +- 1.96 * sqrt((60 + 20) - 40**2 / 1000) / 1000 * 100.
    a, b = outcomes(both=800, only_a=60, only_b=20, neither=120)
    result = paired_comparison({0: a}, {0: b})
    half = 1.96 * math.sqrt(80 - 40**2 / 1000) / 1000 * 100
    assert result.delta_ci_low == pytest.approx(4.0 - half, abs=0.15)
    assert result.delta_ci_high == pytest.approx(4.0 + half, abs=0.15)


def test_holm_adjustment_by_hand():
    # Sorted 0.01, 0.02, 0.04 times 3, 2, 1 -> 0.03, 0.04, 0.04 (monotone), in input order.
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_mean_interval_is_students_t():
    low, high = mean_interval([0.90, 0.92, 0.94])
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (low, high) == pytest.approx((0.92 - half, 0.92 + half))
    with pytest.raises(ValueError, match="at least two"):
        mean_interval([0.9])


# --- the paired bootstrap: a metric that is not a mean over reviews ------------------------


def bootstrap_case(*, strategy_right: float, baseline_right: float, n: int = 400, seeds: int = 1):
    """Balanced binary labels; each side right on the given share of each class (in
    shuffled positions, one draw per seed)."""
    from ftcompare.report import paired_bootstrap  # noqa: F401  (the module under test)

    rng = np.random.default_rng(123)
    labels = np.repeat([0, 1], n // 2)
    sides = []
    for share in (strategy_right, baseline_right):
        runs = {}
        for seed in range(seeds):
            wrong = rng.random(n) >= share
            runs[seed] = np.where(wrong, 1 - labels, labels)
        sides.append(runs)
    return labels, sides[0], sides[1]


@pytest.mark.parametrize("metric", ["mcc", "macro_f1", "f1"])
def test_the_bootstrap_finds_a_clear_difference_and_none_where_there_is_none(metric):
    from ftcompare.contract import score
    from ftcompare.report import paired_bootstrap

    labels, better, worse = bootstrap_case(strategy_right=0.9, baseline_right=0.65)
    clear = paired_bootstrap(metric, labels, better, worse, num_labels=2, replicates=2000)
    expected = score(metric, labels, better[0], num_labels=2) - score(metric, labels, worse[0], num_labels=2)
    assert clear.delta == pytest.approx(100 * expected)
    assert clear.p_value < 0.001 and 0 < clear.delta_ci_low < clear.delta < clear.delta_ci_high
    assert (clear.metric, clear.test) == (metric, "paired bootstrap")
    # The same predictions on both sides: no difference, p = 1.
    same = paired_bootstrap(metric, labels, better, better, num_labels=2, replicates=2000)
    assert same.delta == 0 and same.p_value == 1.0
    # Two draws of the same quality: a large p-value and an interval around zero.
    labels, one, other = bootstrap_case(strategy_right=0.8, baseline_right=0.8, seeds=2)
    alike = paired_bootstrap(metric, labels, one, other, num_labels=2, replicates=2000)
    assert alike.p_value > 0.2 and alike.delta_ci_low < 0 < alike.delta_ci_high
    assert alike.seeds == (0, 1)


def test_the_bootstrap_is_reproducible_with_its_seed_and_agrees_with_mcnemar_on_accuracy():
    from ftcompare.report import paired_bootstrap

    labels, a, b = bootstrap_case(strategy_right=0.8, baseline_right=0.75, seeds=2)
    first = paired_bootstrap("mcc", labels, a, b, num_labels=2, seed=7, replicates=3000)
    assert paired_bootstrap("mcc", labels, a, b, num_labels=2, seed=7, replicates=3000) == first
    assert paired_bootstrap("mcc", labels, a, b, num_labels=2, seed=8, replicates=3000) != first
    # On accuracy the bootstrap and McNemar's exact test (one seed: the sign test weighs
    # every discordant review alike) measure the same difference, and agree roughly on p.
    labels, a, b = bootstrap_case(strategy_right=0.8, baseline_right=0.75)
    boot = paired_bootstrap("accuracy", labels, a, b, num_labels=2, replicates=3000)
    exact = paired_comparison({s: a[s] == labels for s in a}, {s: b[s] == labels for s in b})
    assert boot.delta == pytest.approx(exact.delta)
    assert (boot.better, boot.worse) == (exact.better, exact.worse)
    assert boot.p_value == pytest.approx(exact.p_value, abs=0.05)


def test_the_bootstrap_takes_multiclass_metrics_and_refuses_a_binary_one():
    from ftcompare.contract import ConfigError
    from ftcompare.report import paired_bootstrap

    labels = np.array([0, 1, 2] * 50)
    right, off = {0: labels.copy()}, {0: (labels + 1) % 3}
    result = paired_bootstrap("macro_f1", labels, right, off, num_labels=3, replicates=500)
    assert result.delta == pytest.approx(100.0) and result.p_value == pytest.approx(1 / 501)
    with pytest.raises(ConfigError, match="binary tasks"):
        paired_bootstrap("f1", labels, right, off, num_labels=3)


def test_several_seeds_resample_seeds_then_rows():
    # The strategy's two seeds are 95% and 75% right, the baseline's both 85%: the mean
    # difference is 0, but another draw of seeds could put it 10 points either way. An
    # interval over rows alone is about ±2 points at 2,000 rows; over seeds too it is wide.
    from ftcompare.report import SEED_BOOTSTRAP_TEST, paired_bootstrap

    rng = np.random.default_rng(3)
    labels = np.tile([0, 1], 1000)

    def right_on(share):
        return np.where(rng.random(len(labels)) >= share, 1 - labels, labels)

    strategy, baseline = {0: right_on(0.95), 1: right_on(0.75)}, {0: right_on(0.85), 1: right_on(0.85)}
    for metric in ("accuracy", "mcc"):
        spread = paired_bootstrap(metric, labels, strategy, baseline, num_labels=2, replicates=4000)
        assert spread.test == SEED_BOOTSTRAP_TEST and spread.interval == "bootstrap over seeds and test rows"
        assert spread.delta_ci_high - spread.delta_ci_low > 12
        assert spread.p_value > 0.2  # a seed's luck is not a method's difference
        # Two seeds of the same quality: a much narrower interval.
        steady = {0: right_on(0.85), 1: right_on(0.85)}
        alike = paired_bootstrap(metric, labels, steady, baseline, num_labels=2, replicates=4000)
        assert alike.delta_ci_high - alike.delta_ci_low < 0.6 * (spread.delta_ci_high - spread.delta_ci_low)
    # One seed: rows only, as before.
    one = paired_bootstrap("accuracy", labels, {0: strategy[0]}, {0: baseline[0]}, num_labels=2, replicates=2000)
    assert one.test == "paired bootstrap" and one.interval == "bootstrap over test rows"


def test_detectable_difference_is_the_normal_approximation_at_80_percent_power():
    from ftcompare.report import detectable_difference

    assert detectable_difference(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    # Holm's strictest step over 4 tests: alpha / 4.
    assert detectable_difference(2.0, tests=4) == pytest.approx(2 * (2.497705 + 0.841621), abs=1e-5)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "f1", "mcc"])
def test_did_not_learn_against_a_label_blind_answer(metric):
    from ftcompare.report import learned

    rng = np.random.default_rng(9)
    labels = np.repeat([0, 1], 300)
    guesses = rng.integers(0, 2, len(labels))
    trained = np.where(rng.random(len(labels)) < 0.8, labels, 1 - labels)
    mostly_one = np.where(rng.random(len(labels)) < 0.93, 1, labels)  # 96% class 1, 53% right
    assert learned(metric, labels, trained, num_labels=2).learned
    guessing = learned(metric, labels, guesses, num_labels=2)
    assert not guessing.learned and guessing.reason.startswith("not significantly above")
    rote = learned(metric, labels, mostly_one, num_labels=2)
    assert not rote.learned and "predicts class 1 for 9" in rote.reason
    # A skewed task's majority is no sign of rote answering: 95% of labels class 0.
    skewed = np.r_[np.zeros(570, dtype=int), np.ones(30, dtype=int)]
    good = skewed.copy()
    good[:5] = 1
    assert learned(metric, skewed, good, num_labels=2).learned
