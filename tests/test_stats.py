"""Paired statistics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ftcompare.stats import holm, mean_interval, paired_comparison


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
