"""Statistics over seeds: mean ± std of a cell, and the paired baseline-vs-ours difference.

Baseline and ours of a pair are trained with the same seeds (same data order and init seed),
so their difference is compared seed by seed: mean of the per-seed differences with a two-sided
Student-t interval over the n common seeds (n - 1 degrees of freedom). One seed: no interval.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence


@dataclass(frozen=True)
class PairedDifference:
    """ours - baseline over the common seeds: mean, interval (None when n < 2), n, the seeds."""

    mean: float
    low: float | None
    high: float | None
    n: int
    seeds: tuple[int, ...]
    confidence: float = 0.95

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); NaN where undefined (no value / one value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(values) / n  # statistics.stdev is exact but 20x slower (fractions)
    if n == 1:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Two-sided Student-t interval for the mean of `values`; None for fewer than two values."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(values)
    if n < 2:
        return None
    from scipy import stats as _scipy_stats  # 1 s to import; only intervals need it

    mean, std = mean_std(values)
    half = _scipy_stats.t.ppf(0.5 + confidence / 2.0, df=n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


def paired_difference(baseline: Mapping[int, float], ours: Mapping[int, float],
                      confidence: float = 0.95) -> PairedDifference | None:
    """ours - baseline on the seeds both have ({seed: mIoU} each); None when none is shared."""
    seeds = tuple(sorted(set(baseline) & set(ours)))
    if not seeds:
        return None
    diffs = [ours[s] - baseline[s] for s in seeds]
    interval = t_interval(diffs, confidence)
    low, high = interval if interval is not None else (None, None)
    return PairedDifference(statistics.fmean(diffs), low, high, len(seeds), seeds, confidence)
