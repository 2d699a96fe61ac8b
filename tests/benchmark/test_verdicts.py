"""Verdicts and seed planning against hand-computed cases (t table, G*Power sample sizes)."""

from __future__ import annotations

import math

import pytest

from benchmark.stats import (SIGMA_PRIOR, baseline_verdict, gain_verdict, planning_sigma,
                             seeds_for_gain, seeds_for_precision, t_test_power)

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}  # two-sided 95% t quantiles, printed table


def test_power_matches_textbook_values():
    # one-sample t-test, effect size 1, n = 10, two-sided 0.05: power 0.803 (G*Power)
    assert t_test_power(1.0, 1.0, 10) == pytest.approx(0.803, abs=2e-3)
    # effect size 0.5 needs 34 pairs for 80% (G*Power); per-run sigma 1/sqrt(2) -> sd 1
    assert seeds_for_gain(0.5, sigma_run=1 / math.sqrt(2)) == 34
    assert t_test_power(0.5, 1.0, 33) < 0.8 <= t_test_power(0.5, 1.0, 34)
    assert t_test_power(1.0, 1.0, 1) == 0.0


def test_seed_counts_shrink_with_the_gain():
    counts = [seeds_for_gain(g) for g in (0.6, 1.0, 1.5)]
    assert counts == sorted(counts, reverse=True) and counts[-1] >= 2
    # with the prior sigma 0.5 a gain of 1.0 (d = 1/0.707 = 1.414) needs 7: n = 6 has 0.77
    assert seeds_for_gain(1.0) == 7


def test_precision_seeds_hand_computed():
    # t_{0.975,6} * 0.5 / sqrt(7) = 0.462 <= 0.5, t_{0.975,5} * 0.5 / sqrt(6) = 0.525 > 0.5
    assert seeds_for_precision(0.5, 0.5) == 7


def test_reproduced_smaller_larger_and_not_reproduced():
    # diffs 1.5, 1.0, 2.0: mean 1.5, sd 0.5, half-width 4.303 * 0.5 / sqrt(3) = 1.242
    diffs = [1.5, 1.0, 2.0]
    v = gain_verdict(diffs, paper_gain=1.0)
    assert v.label == "reproduced" and v.n == 3
    assert v.low == pytest.approx(1.5 - 1.242, abs=1e-3) and v.high == pytest.approx(2.742, abs=1e-3)
    assert gain_verdict(diffs, paper_gain=3.0).label == "smaller than the paper"
    assert gain_verdict(diffs, paper_gain=0.1).label == "larger than the paper"
    # diffs around 0 with a tight spread exclude a gain of 1.0: not reproduced
    v = gain_verdict([0.1, -0.1, 0.0, 0.05, -0.05], paper_gain=1.0)
    assert v.label == "not reproduced" and v.more_seeds == 0
    assert gain_verdict([-1.0, -1.2, -0.8], paper_gain=1.0).label == "not reproduced"


def test_inconclusive_says_how_many_more_seeds():
    # n = 1: no interval; the prior plans 7 seeds for a gain of 1.0, so 6 more
    v = gain_verdict([0.6], paper_gain=1.0)
    assert v.label == "inconclusive" and v.low is None and v.sigma_source == "prior"
    assert v.more_seeds == 6 and v.text() == "inconclusive: about 6 more seeds would decide"
    # n = 2 (prior still used): diffs 0.0, 2.0 -> interval 1 +- 12.706 contains 0 and the gain
    v = gain_verdict([0.0, 2.0], paper_gain=1.0)
    assert v.label == "inconclusive" and v.high == pytest.approx(1 + T975[1], abs=1e-2)
    assert v.sigma_source == "prior" and v.more_seeds == 5


def test_measured_sigma_needs_three_seeds():
    assert planning_sigma(0.9, 2) == (SIGMA_PRIOR, "prior")
    assert planning_sigma(0.9, 3) == (0.9, "measured")
    # wide measured spread: diffs sd 2 -> per-run 2/sqrt(2); more seeds than the prior asks
    v = gain_verdict([-1.0, 1.0, 3.0], paper_gain=1.0)
    assert v.label == "inconclusive" and v.sigma_source == "measured"
    assert v.more_seeds == seeds_for_gain(1.0, 2 / math.sqrt(2)) - 3 > 4


def test_baseline_verdicts():
    # 40, 41, 39.5: mean 40.1667, sd 0.7638, half-width 4.303 * 0.7638 / sqrt(3) = 1.898
    values = [40.0, 41.0, 39.5]
    assert baseline_verdict(values, 41.5).label == "matches the paper"
    assert baseline_verdict(values, 42.2).label == "below the paper"
    assert baseline_verdict(values, 37.5).label == "above the paper"
    v = baseline_verdict([39.9], 39.9)
    assert v.label == "inconclusive" and v.more_seeds == 6


def test_difference_verdict_without_a_paper_gain():
    from benchmark.stats import PAPER_SMALLEST_GAIN, difference_verdict

    assert difference_verdict([1.5, 1.0, 2.0]).label == "higher than the baseline"
    assert difference_verdict([-1.5, -1.0, -2.0]).label == "lower than the baseline"
    v = difference_verdict([0.5, -0.5, 1.0])  # interval 0.33 +- 4.303*0.764/sqrt(3) holds 0
    assert v.label == "no difference detected" and v.target == PAPER_SMALLEST_GAIN
    assert v.more_seeds == seeds_for_gain(PAPER_SMALLEST_GAIN, v.sigma) - 3
    assert v.text().startswith("no difference detected: about ")
    one = difference_verdict([2.0])
    assert one.label == "inconclusive" and one.more_seeds == seeds_for_gain(0.6) - 1


def test_cell_verdicts_pick_the_rule_by_row():
    from benchmark.config import Cell
    from benchmark.report.aggregate import CellResult
    from benchmark.report.verdicts import verdicts

    base = Cell(grid="g", row="Base", tag="baseline", pair="p", paper_miou=40.0)
    ours = Cell(grid="g", row="Ours", tag="ours", pair="p", paper_miou=41.0)
    other = Cell(grid="g", row="Other", paper_miou=None)
    results = {base.key: CellResult("done", {0: 40.0, 1: 41.0, 2: 39.5}, 1.0),
               ours.key: CellResult("done", {0: 41.5, 1: 42.0, 2: 41.5}, 1.0),
               other.key: CellResult("done", {0: 10.0}, 1.0)}
    judged = verdicts([base, ours, other], results)
    assert judged[base.key].label == "matches the paper"  # 40.17 +- 1.90 holds 40.0
    assert judged[ours.key].label == "reproduced"  # diffs 1.5, 1.0, 2.0 vs the paper's 1.0
    assert judged[other.key] is None  # no paper number, no pair
    no_paper = [Cell(grid="g", row="Base", tag="baseline", pair="p"),
                Cell(grid="g", row="Ours", tag="ours", pair="p")]
    results = {no_paper[0].key: results[base.key], no_paper[1].key: results[ours.key]}
    judged = verdicts(no_paper, results)
    assert judged[no_paper[0].key] is None
    assert judged[no_paper[1].key].label == "higher than the baseline"
