"""Group-sequential verdicts: look at a pair's seed-paired differences after waves of seeds.

A pair (baseline, ours) is looked at after n_1 < n_2 < ... < n_K seeds (3, 5, 8, 13, ... up to
the fixed plan's seeds, `wave_looks`). At look k the paired t statistic T = mean / (sd / sqrt(n))
of the first n_k differences is compared with boundaries on the t scale:

- efficacy: |T| >= c_k rejects "no difference" (two-sided). The c_k spend the overall alpha
  along the information fraction n_k / n_K (Lan-DeMets: O'Brien-Fleming or Pocock shape).
  Under no difference the path (T_1..T_K) does not depend on the per-run sd or on the
  correlation between baseline and ours (it is scale-free), so the c_k are calibrated once,
  by simulation for k > 1 (the first is an exact t quantile), and hold at any sd: the
  type-I error is exact at 3 seeds, where normal (z) boundaries would double it.
- futility (non-binding, looks before the last): (mean - gain) / se <= -f_k stops a pair whose
  paper gain has become implausible. Under the paper's gain that statistic is again a central t
  path, so the f_k are calibrated the same way: a real gain is stopped for futility with
  probability at most `futility_beta` (spent as beta * t^2). The efficacy boundaries ignore
  futility, so obeying it or not never raises the type-I error.

The verdict at a stop is read off the repeated confidence interval mean +- c_k se, which covers
the true difference at every look at once with 95%, with the labels of `gain_label`. Operating
characteristics (type-I error, power at the paper's gain, expected seeds) depend only on the
effect size gain / sd of the differences and are simulated, seeded, in `characteristics`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from benchmark.stats import PAPER_SMALLEST_GAIN, gain_label, mean_std, t_test_power

LADDER = (3, 5, 8, 13, 21, 34, 55, 89, 144)  # seeds at each look (Fibonacci from 3)
SHAPES = ("obf", "pocock")
SHAPE_NAMES = {"obf": "O'Brien-Fleming", "pocock": "Pocock"}
CALIBRATION_SIMS = 200_000  # paths for the boundaries: overlap terms within ~1e-4 of alpha
CALIBRATION_SEED = 20220617  # fixed: the boundaries (and every dry run) print the same numbers
DECIDED = ("reproduced", "smaller than the paper", "larger than the paper", "not reproduced",
           "baseline off", "higher than the baseline", "lower than the baseline",
           "no difference detected", "inconclusive")


def wave_looks(max_seeds: int, first: int = LADDER[0]) -> tuple[int, ...]:
    """Seeds at each look: the ladder below the maximum (a look at least 2 seeds before it,
    so no wave is a single seed), then the maximum; one look when it is `first` or fewer."""
    if max_seeds <= first:
        return (max(max_seeds, 2),)
    return tuple(n for n in LADDER if first <= n <= max_seeds - 2) + (max_seeds,)


@dataclass(frozen=True)
class Design:
    """The looks and the error rates of a sequential study (one per grid)."""

    looks: tuple[int, ...]
    shape: str = "obf"  # efficacy spending shape: obf | pocock
    alpha: float = 0.05  # overall two-sided type-I error
    futility_beta: float = 0.10  # at most this chance to stop a real paper gain for futility

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown spending shape {self.shape!r}; choose one of "
                             f"{', '.join(SHAPES)}")
        if list(self.looks) != sorted(set(self.looks)) or self.looks[0] < 2:
            raise ValueError(f"looks must increase from at least 2 seeds, got {self.looks}")

    @property
    def max_seeds(self) -> int:
        return self.looks[-1]

    def describe(self) -> str:
        return (f"looks at {', '.join(map(str, self.looks))} seeds; {SHAPE_NAMES[self.shape]} "
                f"alpha-spending on the paired t, overall two-sided {self.alpha:.0%}; "
                f"non-binding futility against the paper's gain "
                f"(at most {self.futility_beta:.0%} of real gains stopped)")

    def to_json(self) -> dict:
        return {"looks": list(self.looks), "shape": self.shape, "alpha": self.alpha,
                "futility_beta": self.futility_beta}

    @classmethod
    def from_json(cls, data: dict) -> Design:
        return cls(tuple(int(n) for n in data["looks"]), str(data["shape"]),
                   float(data["alpha"]), float(data["futility_beta"]))


# --------------------------------------------------------------------------- boundaries


def spent(design: Design) -> tuple[list[float], list[float]]:
    """Cumulative alpha (efficacy) and beta (futility, looks before the last) at each look."""
    t = np.asarray(design.looks, float) / design.max_seeds
    if design.shape == "obf":
        from scipy.special import ndtr, ndtri

        alpha = 2.0 - 2.0 * ndtr(ndtri(1.0 - design.alpha / 2.0) / np.sqrt(t))
    else:
        alpha = design.alpha * np.log1p((math.e - 1.0) * t)
    beta = design.futility_beta * t ** 2
    return [float(a) for a in alpha], [float(b) for b in beta[:-1]]


def _t_paths(looks: Sequence[int], sims: int, seed: int) -> np.ndarray:
    """Paired t statistics at each look of `sims` central paths (no difference), K x sims;
    drawn segment by segment, so memory is sims x the largest wave."""
    rng = np.random.default_rng(seed)
    total = np.zeros(sims)
    squares = np.zeros(sims)
    out = np.empty((len(looks), sims))
    previous = 0
    for k, n in enumerate(looks):
        z = rng.standard_normal((sims, n - previous))
        total += z.sum(axis=1)
        squares += (z * z).sum(axis=1)
        mean = total / n
        var = np.maximum(squares - n * mean * mean, 1e-300) / (n - 1)
        out[k] = mean / np.sqrt(var / n)
        previous = n
    return out


def _calibrate(stats: np.ndarray, looks: Sequence[int], cumulative: Sequence[float],
               sides: int) -> list[float]:
    """Boundaries c_k with P(first crossing by look k) = cumulative[k]: the exact t tail at
    look k minus the simulated share of paths that crossed before and cross again."""
    from scipy.special import stdtr

    crossed = np.zeros(stats.shape[1], bool)
    bounds: list[float] = []
    previous = 0.0
    for k, target in enumerate(cumulative):
        df = looks[k] - 1
        increment = target - previous
        again = np.sort(stats[k][crossed])

        def excess(c: float) -> float:
            tail = sides * (1.0 - float(stdtr(df, c)))
            overlap = (len(again) - np.searchsorted(again, c)) / stats.shape[1]
            return tail - overlap - increment

        low, high = 0.0, 1e7
        for _ in range(200):  # bisection: the tail falls monotonically in c
            mid = 0.5 * (low + high) if high < 1e3 else math.sqrt(max(low, 1e-3) * high)
            low, high = (mid, high) if excess(mid) > 0 else (low, mid)
            if high - low < 1e-7 * high:
                break
        bounds.append(high)
        crossed |= stats[k] >= high
        previous = target
    return bounds


@dataclass(frozen=True)
class Boundaries:
    """Efficacy |T| >= efficacy[k]; futility (mean - gain) / se <= -futility[k] (k < K - 1)."""

    efficacy: tuple[float, ...]
    futility: tuple[float, ...]

    def to_json(self) -> dict:
        return {"efficacy": [round(c, 6) for c in self.efficacy],
                "futility": [round(f, 6) for f in self.futility]}


@functools.lru_cache(maxsize=32)
def boundaries(design: Design, sims: int = CALIBRATION_SIMS,
               seed: int = CALIBRATION_SEED) -> Boundaries:
    """The design's boundaries on the t scale (seeded simulation; about 0.2 s, cached)."""
    stats = _t_paths(design.looks, sims, seed)
    alpha, beta = spent(design)
    efficacy = _calibrate(np.abs(stats), design.looks, alpha, sides=2)
    futility = _calibrate(-stats[:-1], design.looks[:-1], beta, sides=1) if beta else []
    return Boundaries(tuple(efficacy), tuple(futility))


# --------------------------------------------------------------------------- one look


@dataclass(frozen=True)
class Look:
    """One look at a pair: the first n differences, the repeated interval, the decision."""

    n: int
    mean: float
    low: float  # repeated confidence interval mean -+ c_k se
    high: float
    t: float
    label: str  # "continue" or one of DECIDED
    reason: str = ""  # efficacy | futility | baseline | final

    @property
    def decided(self) -> bool:
        return self.label != "continue"

    def to_json(self) -> dict:
        return {"n": self.n, "mean": round(self.mean, 6), "low": round(self.low, 6),
                "high": round(self.high, 6), "t": round(self.t, 6) if math.isfinite(self.t)
                else None, "label": self.label, "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict) -> Look:
        t = data.get("t")
        return cls(int(data["n"]), float(data["mean"]), float(data["low"]), float(data["high"]),
                   math.inf if t is None else float(t), str(data["label"]),
                   str(data.get("reason", "")))


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    mean, sd = mean_std(list(values))
    return mean, sd / math.sqrt(len(values))


def _ratio(num: float, se: float) -> float:
    if se > 0:
        return num / se
    return 0.0 if num == 0 else math.copysign(math.inf, num)


def decide(diffs: Sequence[float], k: int, design: Design, bounds: Boundaries,
           gain: float | None, baseline: Sequence[float] | None = None,
           paper_baseline: float | None = None) -> Look:
    """The decision at look k from the pair's first n_k differences (ours - baseline).

    With a paper gain: efficacy -> the gain label of the repeated interval; futility -> not
    reproduced; the baseline's own repeated interval beyond the paper's number +- the gain ->
    baseline off (the setup differs from the paper by more than the effect); the last look ->
    not reproduced or inconclusive. Without one (grids of our own): efficacy -> higher / lower
    than the baseline; futility on both sides of +-PAPER_SMALLEST_GAIN, or the last look -> no
    difference detected."""
    n = design.looks[k]
    if len(diffs) < n:
        raise ValueError(f"look {k + 1} needs {n} paired seeds, got {len(diffs)}")
    mean, se = _mean_se(diffs[:n])
    c = bounds.efficacy[k]
    t = _ratio(mean, se)
    low, high = mean - c * se, mean + c * se
    last = k == len(design.looks) - 1
    f = None if last else bounds.futility[k]

    def look(label: str, reason: str) -> Look:
        return Look(n, mean, low, high, t, label, reason)

    if abs(t) >= c:
        if gain is None:
            return look("higher than the baseline" if mean > 0 else "lower than the baseline",
                        "efficacy")
        return look(gain_label(low, high, gain), "efficacy")
    if gain is None:
        detect = PAPER_SMALLEST_GAIN
        if f is not None and mean + f * se < detect and mean - f * se > -detect:
            return look("no difference detected", "futility")
        return look("no difference detected", "final") if last else look("continue", "")
    if f is not None and gain > 0 and _ratio(mean - gain, se) <= -f:
        return look("not reproduced", "futility")
    if baseline is not None and paper_baseline is not None and gain > 0 and len(baseline) >= n:
        b_mean, b_se = _mean_se(baseline[:n])
        if b_mean - c * b_se > paper_baseline + gain or b_mean + c * b_se < paper_baseline - gain:
            return look("baseline off", "baseline")
    if last:
        label = gain_label(low, high, gain)
        return look(label if label == "not reproduced" else "inconclusive", "final")
    return look("continue", "")


# --------------------------------------------------------------------------- operating chars


@dataclass(frozen=True)
class Characteristics:
    """Simulated behaviour of a design at one effect size (gain / sd of the differences)."""

    effect: float  # gain / sd of the paired differences
    type1_nominal: float  # at no difference, futility ignored (what the boundaries promise)
    type1: float  # at no difference, futility obeyed
    power: float  # at the paper's gain: efficacy crossing in the gain's direction
    seeds_null: float  # expected seeds per cell of the pair at no difference
    seeds_gain: float  # ... at the paper's gain
    fixed_power: float  # the fixed plan (max seeds, one look) at the paper's gain
    sims: int
    decided: dict = field(default_factory=dict)  # {label: share} at the paper's gain

    def se(self, p: float) -> float:
        """Monte Carlo standard error of a simulated probability p."""
        return math.sqrt(max(p * (1 - p), 1e-12) / self.sims)


def _gain_labels(low: np.ndarray, high: np.ndarray, gain: float) -> np.ndarray:
    """`gain_label` on arrays of intervals."""
    return np.select(
        [(low > 0) & (gain < low), (low > 0) & (gain > high), low > 0,
         (gain < low) | (gain > high)],
        ["larger than the paper", "smaller than the paper", "reproduced", "not reproduced"],
        "inconclusive").astype(object)


def simulate(design: Design, bounds: Boundaries, effect: float, sims: int, seed: int,
             gain_effect: float | None, detect_effect: float) -> dict[str, np.ndarray]:
    """Vectorised `decide` on `sims` normal paths of differences with mean `effect` and sd 1
    (effect sizes), against the paper's gain `gain_effect` (None: a difference pair, whose
    futility margin is `detect_effect`). Returns per path: seeds at the stop, efficacy
    crossings obeying futility and ignoring it, the label, the sign of the mean."""
    rng = np.random.default_rng(seed)
    total, squares = np.zeros(sims), np.zeros(sims)
    alive = np.ones(sims, bool)
    crossed_any = np.zeros(sims, bool)  # futility ignored
    stop_n = np.full(sims, design.max_seeds)
    label = np.full(sims, "inconclusive", dtype=object)
    previous = 0
    last = len(design.looks) - 1
    for k, n in enumerate(design.looks):
        z = effect + rng.standard_normal((sims, n - previous))
        total += z.sum(axis=1)
        squares += (z * z).sum(axis=1)
        previous = n
        mean = total / n
        se = np.sqrt(np.maximum(squares - n * mean * mean, 1e-300) / (n - 1) / n)
        c = bounds.efficacy[k]
        low, high = mean - c * se, mean + c * se
        cross = np.abs(mean / se) >= c
        crossed_any |= cross
        eff = alive & cross
        if gain_effect is None:
            label[eff] = np.where(mean[eff] > 0, "higher than the baseline",
                                  "lower than the baseline")
        else:
            label[eff] = _gain_labels(low[eff], high[eff], gain_effect)
        stop = eff.copy()
        rest = alive & ~cross
        if k < last:
            f = bounds.futility[k]
            if gain_effect is None:
                fut = rest & (mean + f * se < detect_effect) & (mean - f * se > -detect_effect)
                label[fut] = "no difference detected"
                stop |= fut
            elif gain_effect > 0:
                fut = rest & ((mean - gain_effect) / se <= -f)
                label[fut] = "not reproduced"
                stop |= fut
        elif gain_effect is None:
            label[rest] = "no difference detected"
        else:
            label[rest & (_gain_labels(low, high, gain_effect) == "not reproduced")] = \
                "not reproduced"
        stop_n[alive & stop] = n
        alive &= ~stop
    efficacy = ~np.isin(label, ("not reproduced", "inconclusive", "no difference detected"))
    return {"n": stop_n, "efficacy": efficacy, "crossed_any": crossed_any, "label": label,
            "positive": total > 0}


@functools.lru_cache(maxsize=256)
def characteristics(design: Design, gain: float | None, sd_diff: float, sims: int = 20_000,
                    seed: int = 1) -> Characteristics:
    """Type-I error, power at the paper's gain and expected seeds of a pair, at the sd of its
    paired differences (sigma * sqrt(2 (1 - rho))). Without a paper gain the power is that of
    detecting PAPER_SMALLEST_GAIN. Scale-free: only gain / sd_diff matters."""
    bounds = boundaries(design)
    target = PAPER_SMALLEST_GAIN if gain is None else gain
    effect = target / sd_diff
    gain_effect = None if gain is None else effect
    detect = PAPER_SMALLEST_GAIN / sd_diff
    null = simulate(design, bounds, 0.0, sims, seed, gain_effect, detect)
    alt = simulate(design, bounds, effect, sims, seed + 1, gain_effect, detect)
    labels, counts = np.unique(alt["label"].astype(str), return_counts=True)
    power = float(np.mean(alt["efficacy"] & (alt["positive"] == (target > 0))))
    return Characteristics(
        effect=effect, type1_nominal=float(np.mean(null["crossed_any"])),
        type1=float(np.mean(null["efficacy"])), power=power,
        seeds_null=float(np.mean(null["n"])), seeds_gain=float(np.mean(alt["n"])),
        fixed_power=t_test_power(target, sd_diff, design.max_seeds, design.alpha), sims=sims,
        decided={str(lab): round(int(c) / sims, 4) for lab, c in zip(labels, counts)})


def sd_of_differences(sigma: float, rho: float) -> float:
    """sd of ours - baseline for two runs with per-run sd `sigma` and within-seed correlation."""
    return sigma * math.sqrt(max(2.0 * (1.0 - rho), 1e-6))
