"""Statistics over seeds: mean ± std of a cell, and the paired baseline-vs-ours difference.

Baseline and ours of a pair are trained with the same seeds (same data order and init seed),
so their difference is compared seed by seed: mean of the per-seed differences with a two-sided
Student-t interval over the n common seeds (n - 1 degrees of freedom). One seed: no interval.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Mapping, Sequence


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


def t_quantile(p: float, df: int) -> float:
    """Student-t quantile; scipy.special (0.3 s to import, scipy.stats takes 1.5 s)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Two-sided Student-t interval for the mean of `values`; None for fewer than two values."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(values)
    if n < 2:
        return None
    mean, std = mean_std(values)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
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


# --------------------------------------------------------------------------- verdicts and power
# A reproduction claim is a statement about an interval, so every verdict below is read off the
# 95% Student-t interval of the per-seed values, and every "how many seeds" is the sample size
# of a two-sided one-sample t-test (paired differences) at 80% power.

PAPER_SMALLEST_GAIN = 0.6  # mIoU: ProtoSeg's smallest gain in the paper's Tables 1-3
SIGMA_PRIOR = 0.5  # mIoU: seed-to-seed standard deviation of one run, when not measured
MIN_SEEDS_FOR_MEASURED_SIGMA = 3  # below this the observed spread is too rough to plan with
MAX_SEEDS = 200  # search bound for seed counts (a gain below ~0.15 sigma is not worth planning)


@dataclass(frozen=True)
class Verdict:
    """What the seeds say about one claim: a label, the interval behind it, and the plan."""

    label: str  # reproduced | smaller than the paper | larger than the paper | not reproduced |
    # inconclusive | matches the paper | below the paper | above the paper
    mean: float
    low: float | None
    high: float | None
    n: int
    target: float  # the paper's gain (pairs) or the paper's number (baselines)
    more_seeds: int = 0  # seeds to add that would decide an inconclusive verdict
    sigma: float = SIGMA_PRIOR  # per-run sigma used for planning
    sigma_source: str = "prior"  # prior | measured
    how: str = ""  # how the seeds were looked at (benchmark/report/verdicts.py), when it matters

    def text(self) -> str:
        """One line for tables: the label, the seeds needed when inconclusive, and how the
        verdict was reached when it was looked at more than once."""
        if self.label == "inconclusive" and self.more_seeds:
            text = f"inconclusive: about {self.more_seeds} more seeds would decide"
        elif self.label == "no difference detected" and self.more_seeds:
            text = (f"no difference detected: about {self.more_seeds} more seeds would detect "
                    f"{self.target:.1f}")
        else:
            text = self.label
        return f"{text} ({self.how})" if self.how else text


def planning_sigma(per_run_sd: float | None, n: int, prior: float = SIGMA_PRIOR
                   ) -> tuple[float, str]:
    """The per-run sigma to plan with: measured from n >= 3 seeds, else the prior."""
    if per_run_sd is not None and n >= MIN_SEEDS_FOR_MEASURED_SIGMA and math.isfinite(per_run_sd):
        return per_run_sd, "measured"
    return prior, "prior"


def t_test_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample t-test of mean 0 when the true mean is `effect`."""
    if n < 2 or sd <= 0:
        return 0.0
    from scipy.special import nctdtr

    df = n - 1
    crit = t_quantile(1.0 - alpha / 2.0, df)
    nc = abs(effect) * math.sqrt(n) / sd
    return float(1.0 - nctdtr(df, nc, crit) + nctdtr(df, nc, -crit))


def seeds_for_gain(gain: float, sigma_run: float = SIGMA_PRIOR, power: float = 0.8,
                   alpha: float = 0.05) -> int:
    """Seeds per cell for a paired study to detect `gain` at `power` (two-sided `alpha`).

    A paired difference of two runs with per-run sigma has sd sigma * sqrt(2)."""
    sd = sigma_run * math.sqrt(2.0)
    for n in range(2, MAX_SEEDS + 1):
        if t_test_power(gain, sd, n, alpha) >= power:
            return n
    return MAX_SEEDS


def seeds_for_precision(half_width: float, sigma_run: float = SIGMA_PRIOR,
                        confidence: float = 0.95) -> int:
    """Seeds whose t-interval of a mean has at most `half_width` (expected, sd = sigma_run)."""
    for n in range(2, MAX_SEEDS + 1):
        quantile = t_quantile(0.5 + confidence / 2.0, n - 1)
        if quantile * sigma_run / math.sqrt(n) <= half_width:
            return n
    return MAX_SEEDS


def gain_label(low: float, high: float, paper_gain: float) -> str:
    """The label an interval of ours - baseline earns against the paper's gain: excluding 0,
    reproduced / smaller / larger than the paper as the gain lies in / above / below it;
    else not reproduced when it excludes the gain, inconclusive when it holds both."""
    if low > 0:
        return ("reproduced" if low <= paper_gain <= high else
                "smaller than the paper" if high < paper_gain else "larger than the paper")
    return "inconclusive" if low <= paper_gain <= high else "not reproduced"


def gain_verdict(diffs: Sequence[float], paper_gain: float, sigma_prior: float = SIGMA_PRIOR,
                 confidence: float = 0.95) -> Verdict:
    """Verdict on ours - baseline (per-seed paired differences) against the paper's gain.

    reproduced: the interval excludes 0 and contains the gain; smaller / larger than the paper:
    it excludes 0 and lies below / above the gain; not reproduced: it excludes the gain and
    includes or lies below 0; otherwise (or with one seed) inconclusive, with the seeds that
    would detect the gain at 80% power (sigma measured from the differences with >= 3 seeds,
    else the prior).
    """
    n = len(diffs)
    mean, sd = mean_std(diffs)
    interval = t_interval(diffs, confidence) if n >= 2 else None
    sigma, source = planning_sigma(sd / math.sqrt(2.0) if n >= 2 else None, n, sigma_prior)
    base = dict(mean=mean, n=n, target=paper_gain, sigma=sigma, sigma_source=source)
    if interval is None:
        return Verdict("inconclusive", low=None, high=None,
                       more_seeds=max(1, seeds_for_gain(paper_gain, sigma) - n), **base)
    low, high = float(interval[0]), float(interval[1])
    label = gain_label(low, high, paper_gain)
    more = max(1, seeds_for_gain(paper_gain, sigma) - n) if label == "inconclusive" else 0
    return Verdict(label, low=low, high=high, more_seeds=more, **base)


def baseline_verdict(values: Sequence[float], paper: float, tolerance: float = 0.5,
                     sigma_prior: float = SIGMA_PRIOR, confidence: float = 0.95) -> Verdict:
    """Verdict on a baseline's absolute mIoU (per-seed values) against the paper's number.

    matches the paper: the interval contains it; below / above the paper: the interval lies
    below / above it; with one seed (no interval) inconclusive, with the seeds whose interval
    would be at most +-`tolerance` wide."""
    n = len(values)
    mean, sd = mean_std(values)
    sigma, source = planning_sigma(sd if n >= 2 else None, n, sigma_prior)
    base = dict(mean=mean, n=n, target=paper, sigma=sigma, sigma_source=source)
    interval = t_interval(values, confidence) if n >= 2 else None
    if interval is None:
        return Verdict("inconclusive", low=None, high=None,
                       more_seeds=max(1, seeds_for_precision(tolerance, sigma) - n), **base)
    low, high = float(interval[0]), float(interval[1])
    label = ("matches the paper" if low <= paper <= high else
             "below the paper" if high < paper else "above the paper")
    return Verdict(label, low=low, high=high, **base)


def difference_verdict(diffs: Sequence[float], detect: float = PAPER_SMALLEST_GAIN,
                       sigma_prior: float = SIGMA_PRIOR, confidence: float = 0.95) -> Verdict:
    """Verdict on ours - baseline where the paper gives no gain (grids of our own):
    higher / lower than the baseline when the interval excludes 0, else no difference detected
    (inconclusive with one seed), with the seeds that would detect a gain of `detect`."""
    n = len(diffs)
    mean, sd = mean_std(diffs)
    sigma, source = planning_sigma(sd / math.sqrt(2.0) if n >= 2 else None, n, sigma_prior)
    more = max(1, seeds_for_gain(detect, sigma) - n)
    base = dict(mean=mean, n=n, target=detect, sigma=sigma, sigma_source=source)
    if n < 2:
        return Verdict("inconclusive", low=None, high=None, more_seeds=more, **base)
    low, high = (float(v) for v in t_interval(diffs, confidence))
    if low > 0 or high < 0:
        label = "higher than the baseline" if low > 0 else "lower than the baseline"
        return Verdict(label, low=low, high=high, **base)
    return Verdict("no difference detected", low=low, high=high, more_seeds=more, **base)


# --------------------------------------------------------------------------- seed plans
# (here, not in launch/: the grids in experiments/ default to the planned seeds)


@dataclass(frozen=True)
class PairGain:
    """A baseline/ours pair and the paper's gain of ours over the baseline."""

    pair: str
    row: str
    gain: float


def paper_gains(cells: Sequence[Any]) -> list[PairGain]:
    """Each pair's paper gain (ours - baseline), grid order; pairs without numbers left out."""
    base = {c.pair: c for c in cells if c.tag == "baseline" and c.pair}
    gains = []
    for c in cells:
        b = base.get(c.pair)
        if c.tag == "ours" and b is not None and None not in (c.paper_miou, b.paper_miou):
            gains.append(PairGain(c.pair, f"{b.row} / {b.column}", c.paper_miou - b.paper_miou))
    return gains


def planned_seeds(cells: Sequence[Any], sigma: float = SIGMA_PRIOR) -> int:
    """Seeds per cell that detect the grid's smallest paper gain (or, without paper gains,
    the paper's smallest gain of all tables) at 80% power."""
    gains = [g.gain for g in paper_gains(cells) if g.gain > 0]
    return seeds_for_gain(min(gains) if gains else PAPER_SMALLEST_GAIN, sigma)
