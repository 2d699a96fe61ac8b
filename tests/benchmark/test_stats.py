"""The paired t-interval equals a hand computation; one seed gives no interval."""

from __future__ import annotations

import math

import pytest

from benchmark.stats import mean_std, paired_difference, t_interval

# Two-sided 95% Student-t quantiles t_{0.975, df}, from a printed t table.
T975 = {1: 12.706, 2: 4.303, 4: 2.776}


def test_paired_difference_matches_hand_computation():
    baseline = {0: 40.0, 1: 41.0, 2: 39.5}
    ours = {0: 41.5, 1: 42.0, 2: 41.5}
    # differences 1.5, 1.0, 2.0: mean 1.5, sample sd 0.5, standard error 0.5 / sqrt(3)
    diff = paired_difference(baseline, ours)
    half = T975[2] * 0.5 / math.sqrt(3)  # 1.2421...
    assert diff.n == 3 and diff.seeds == (0, 1, 2)
    assert diff.mean == pytest.approx(1.5)
    assert diff.low == pytest.approx(1.5 - half, abs=1e-3)
    assert diff.high == pytest.approx(1.5 + half, abs=1e-3)
    assert diff.has_interval


def test_only_common_seeds_are_paired():
    baseline = {0: 40.0, 1: 41.0, 3: 10.0}
    ours = {0: 41.0, 1: 43.0, 2: 99.0, 4: 0.0}
    diff = paired_difference(baseline, ours)
    assert diff.seeds == (0, 1) and diff.n == 2
    assert diff.mean == pytest.approx(1.5)  # differences 1 and 2
    half = T975[1] * math.sqrt(0.5) / math.sqrt(2)  # sd of (1, 2) = sqrt(0.5)
    assert (diff.low, diff.high) == pytest.approx((1.5 - half, 1.5 + half), abs=1e-2)


def test_one_seed_has_no_interval_and_no_common_seed_is_none():
    diff = paired_difference({0: 40.0}, {0: 41.25})
    assert diff.n == 1 and diff.mean == pytest.approx(1.25)
    assert diff.low is None and diff.high is None and not diff.has_interval
    assert paired_difference({0: 40.0}, {1: 41.0}) is None
    assert paired_difference({}, {}) is None


def test_pairing_beats_unpaired_when_seeds_share_noise():
    # the seed moves both methods together; the paired interval sees only the steady +1
    baseline = {s: 40.0 + 3 * (s % 2) for s in range(5)}
    ours = {s: v + 1.0 + 0.1 * s for s, v in baseline.items()}
    diff = paired_difference(baseline, ours)
    assert diff.low > 0  # a real gain, though the seed spread (3 points) is larger than it
    diffs = [1.0 + 0.1 * s for s in range(5)]
    assert (diff.low, diff.high) == pytest.approx(t_interval(diffs))
    sd = mean_std(diffs)[1]
    assert diff.high - diff.mean == pytest.approx(T975[4] * sd / math.sqrt(5), abs=1e-3)


def test_mean_std_and_interval_edge_cases():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    mean, std = mean_std([5.0])
    assert mean == 5.0 and math.isnan(std)
    assert all(math.isnan(v) for v in mean_std([]))
    assert t_interval([1.0]) is None
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=1.5)
    # wider confidence, wider interval
    low90, high90 = t_interval([1.0, 2.0, 4.0], confidence=0.90)
    low95, high95 = t_interval([1.0, 2.0, 4.0])
    assert low95 < low90 < high90 < high95
