"""`--seeds auto`: which seeds each cell needs next, from the records and the sequential state.

A grid's study starts with a design (benchmark/sequential.py) whose last look is the fixed plan's
seeds (benchmark/launch/seeds.py: --sigma, else measured, else the prior sd); the design and its
boundaries are then kept in `results/sequential/<grid>.json` (benchmark/looks.py), so the looks
never move with the data. Each call of `plan_waves` takes every look whose seeds are all done
for both cells of a pair, in order, and stops a pair at its decision; a cell then needs the
seeds of the next look of its open pairs (a baseline shared by pairs: the largest), and a cell in
no pair only the first wave. The per-run sd and the correlation of baseline and ours within a
seed are measured from the records after the first wave and give the remaining plan's numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchmark.config import Cell
from benchmark.looks import PairState, SequentialState, load_state, pair_key, save_state
from benchmark.launch.seeds import planning_sd, run_hours
from benchmark.sequential import (SHAPE_NAMES, Design, boundaries, characteristics, decide,
                                  sd_of_differences, simulate, wave_looks)
from benchmark.stats import MIN_SEEDS_FOR_MEASURED_SIGMA, PAPER_SMALLEST_GAIN, planned_seeds
from benchmark.store import Record, ResultsLayout


@dataclass(frozen=True)
class StudyPair:
    """A baseline and a cell judged against it (tag ours or switch), and the paper's gain."""

    base: Cell
    ours: Cell
    gain: float | None  # None: no paper numbers, judged against zero

    @property
    def key(self) -> str:
        return pair_key(self.base, self.ours)


def study_pairs(cells: list[Cell] | tuple[Cell, ...]) -> list[StudyPair]:
    """Every (baseline, ours or switch) pair of the grid, grid order (as verdicts pair them)."""
    base = {c.pair: c for c in cells if c.tag == "baseline" and c.pair}
    out = []
    for c in cells:
        b = base.get(c.pair)
        if c.tag in ("ours", "switch") and b is not None:
            gain = (c.paper_miou - b.paper_miou
                    if c.paper_miou is not None and b.paper_miou is not None else None)
            out.append(StudyPair(b, c, gain))
    return out


def done_miou(records: list[Record]) -> dict[str, dict[int, float]]:
    """{cell key: {seed: mIoU}} of the done records (the first per seed, as tables count)."""
    out: dict[str, dict[int, float]] = {}
    for r in records:
        if r.status == "done" and r.miou is not None:
            out.setdefault(r.cell_key, {}).setdefault(int(r.seed), float(r.miou))
    return out


@dataclass(frozen=True)
class Variation:
    """What the remaining plan assumes: per-run sd, within-seed correlation, where from."""

    sigma: float
    rho: float
    source: str  # in words

    @property
    def sd_diff(self) -> float:
        return sd_of_differences(self.sigma, self.rho)


def measured_correlation(pairs: list[StudyPair], done: dict[str, dict[int, float]]
                         ) -> tuple[float, int, int] | None:
    """Within-seed correlation of baseline and ours, pooled over pairs with >= 3 common seeds
    (each cell centred on its own mean); with the pairs and seeds used. None without any."""
    cov = var_b = var_o = 0.0
    used = seeds = 0
    for p in pairs:
        b, o = done.get(p.base.key, {}), done.get(p.ours.key, {})
        common = sorted(set(b) & set(o))
        if len(common) < MIN_SEEDS_FOR_MEASURED_SIGMA:
            continue
        xb = np.array([b[s] for s in common])
        xo = np.array([o[s] for s in common])
        xb, xo = xb - xb.mean(), xo - xo.mean()
        cov += float(xb @ xo)
        var_b += float(xb @ xb)
        var_o += float(xo @ xo)
        used, seeds = used + 1, seeds + len(common)
    if not used or var_b <= 0 or var_o <= 0:
        return None
    return max(-0.99, min(0.99, cov / math.sqrt(var_b * var_o))), used, seeds


def variation(cells: list[Cell] | tuple[Cell, ...], records: list[Record],
              sigma: float | None = None) -> Variation:
    """The sd (--sigma, else measured from cells with >= 3 seeds, else the prior) and the
    correlation (measured from pairs with >= 3 common seeds, else 0: independent runs)."""
    sd, sd_from = planning_sd(records, sigma)
    corr = measured_correlation(study_pairs(cells), done_miou(records))
    if corr is None:
        return Variation(sd, 0.0, f"per-run sd {sd:.2f} mIoU ({sd_from}), within-seed "
                                  "correlation 0.00 (prior: independent runs)")
    return Variation(sd, corr[0], f"per-run sd {sd:.2f} mIoU ({sd_from}), within-seed "
                                  f"correlation {corr[0]:.2f} (measured over {corr[1]} pairs, "
                                  f"{corr[2]} seeds)")


def new_state(cells: list[Cell] | tuple[Cell, ...], records: list[Record],
              sigma: float | None, shape: str) -> SequentialState:
    """A study whose last look is the fixed plan's seeds at the planning sd."""
    v = variation(cells, records, sigma)
    design = Design(wave_looks(planned_seeds(cells, v.sigma)), shape)
    return SequentialState(design, boundaries(design),
                           f"{v.source.split(', within')[0]}, 80% power at the smallest gain")


# --------------------------------------------------------------------------- the next wave


@dataclass
class WavePlan:
    """Seeds each cell needs now, the state after the looks taken, and what to say."""

    targets: dict[str, int]  # cell key -> seeds 0..n-1
    state: SequentialState
    lines: list[str]
    changed: bool


def _look_line(p: StudyPair, state: SequentialState, k: int) -> str:
    look = state.pairs[p.key].looks[k]
    design = state.design
    c = state.boundaries.efficacy[k]
    then = (look.label if look.decided else
            f"continue to {design.looks[k + 1]} seeds")
    return (f"  look {k + 1}/{len(design.looks)} at {look.n} seeds, {p.ours.row} vs "
            f"{p.base.row}: {look.mean:+.2f} [{look.low:+.2f}, {look.high:+.2f}], "
            f"|t| {abs(look.t):.2f} vs {c:.2f} -> {then}")


def plan_waves(grid: str, cells: list[Cell] | tuple[Cell, ...], layout: ResultsLayout,
               records: list[Record], sigma: float | None = None, shape: str = "obf",
               save: bool = False) -> WavePlan:
    """Take every look the records allow, then the seeds each cell needs (see the module);
    `save` writes the state when it changed (run commands; the dry run and --status don't)."""
    state = load_state(layout, grid)
    lines: list[str] = []
    changed = state is None
    if state is None:
        state = new_state(cells, records, sigma, shape)
    elif state.design.shape != shape:
        lines.append(f"  the study keeps its {SHAPE_NAMES[state.design.shape]} design "
                     f"({layout.sequential(grid)}); delete it to start over")
    design, bounds = state.design, state.boundaries
    done = done_miou(records)
    pairs = study_pairs(cells)
    need: dict[str, int] = {c.key: design.looks[0] for c in cells}
    for p in pairs:
        ps = state.pairs.setdefault(p.key, PairState(p.ours.pair, p.ours.row, p.gain))
        b, o = done.get(p.base.key, {}), done.get(p.ours.key, {})
        while ps.decision is None and len(ps.looks) < len(design.looks):
            k = len(ps.looks)
            n = design.looks[k]
            if not all(s in b and s in o for s in range(n)):
                break
            ps.looks.append(decide([o[s] - b[s] for s in range(n)], k, design, bounds, p.gain,
                                   [b[s] for s in range(n)], p.base.paper_miou))
            lines.append(_look_line(p, state, k))
            changed = True
        want = ps.decision.n if ps.decision is not None else design.looks[len(ps.looks)]
        for cell in (p.base, p.ours):
            need[cell.key] = max(need[cell.key], want) if cell.key in need else want
    if changed and any(state.pairs[p.key].looks for p in pairs):
        v = variation(cells, records)
        state.measured = {"sigma": round(v.sigma, 4), "rho": round(v.rho, 4), "from": v.source}
        lines.append(f"  remaining plan at {v.source}")
    if save and changed:
        save_state(layout, grid, state)
    open_pairs = [p for p in pairs if state.pairs[p.key].decision is None]
    if pairs:
        now = ", ".join(str(n) for n in sorted(set(need.values())))
        lines.append(f"  sequential: {len(pairs) - len(open_pairs)} of {len(pairs)} pairs "
                     f"decided; seeds per cell now {now} of at most {design.max_seeds}")
    return WavePlan(need, state, lines, changed)


# --------------------------------------------------------------------------- the dry run


@dataclass(frozen=True)
class _Expected:
    null: float
    gain: float


def _stop_seeds(design: Design, gain: float | None, sd_diff: float, at_gain: bool, seed: int,
                after: int, sims: int = 4_000) -> np.ndarray:
    """Seeds at the stop of simulated paths of one pair that survive past `after` seeds."""
    target = PAPER_SMALLEST_GAIN if gain is None else gain
    effect = target / sd_diff
    out = simulate(design, boundaries(design), effect if at_gain else 0.0, sims, seed,
                   None if gain is None else effect, PAPER_SMALLEST_GAIN / sd_diff)["n"]
    alive = out[out > after]
    return alive if len(alive) else np.full(1, after)


def expected_runs(state: SequentialState, cells: list[Cell] | tuple[Cell, ...],
                  v: Variation) -> _Expected:
    """Expected runs of the grid to the end of the study under no difference and at the
    paper's gains: decided pairs at their stop, open ones simulated from their last look
    (pairs independent; a shared baseline runs the largest of its pairs' seeds)."""
    design = state.design
    result = []
    for at_gain in (False, True):
        need: dict[str, np.ndarray] = {c.key: np.full(1, design.looks[0]) for c in cells}
        for i, p in enumerate(study_pairs(cells)):
            ps = state.pairs.get(p.key)
            if ps is not None and ps.decision is not None:
                n = np.full(1, ps.decision.n)
            else:
                after = ps.looks[-1].n if ps is not None and ps.looks else 0
                n = _stop_seeds(design, p.gain, v.sd_diff, at_gain, 11 + 2 * i, after)
            for cell in (p.base, p.ours):
                a, b = need[cell.key], n
                size = max(len(a), len(b))
                need[cell.key] = np.maximum(np.resize(a, size), np.resize(b, size))
        result.append(sum(float(np.mean(n)) for n in need.values()))
    return _Expected(*result)


def sequential_plan(grid: str, cells: list[Cell] | tuple[Cell, ...], layout: ResultsLayout,
                    records: list[Record], sigma: float | None = None,
                    shape: str = "obf") -> list[str]:
    """The `--dry-run --seeds auto` lines: the design, its boundaries, the variation assumed,
    per pair type-I error, power and expected seeds beside the fixed plan, and the grid's
    expected runs (and device-hours once a run has been timed)."""
    plan = plan_waves(grid, cells, layout, records, sigma, shape, save=False)
    state, design = plan.state, plan.state.design
    pairs = study_pairs(cells)
    if not pairs:
        return [f"sequential plan: grid {grid} has no baseline/ours pairs; --seeds auto runs "
                f"its first wave ({design.looks[0]} seeds per cell) only"]
    v = variation(cells, records, sigma)
    b = state.boundaries
    lines = [f"sequential plan (--seeds auto): {design.describe()}",
             f"  maximum planned with {state.planned_from}; boundaries on the paired t: "
             f"efficacy |t| >= {', '.join(f'{c:.2f}' for c in b.efficacy)}; futility "
             f"(mean - gain) / se <= {', '.join(f'-{f:.2f}' for f in b.futility)}",
             f"  remaining plan at {v.source}: sd of the paired differences {v.sd_diff:.2f}",
             f"  {'pair':<40} {'gain':>5}  {'type-I':>6}  {'power':>5} {'(fixed)':>7}  "
             f"seeds no gain / at gain  state"]
    for p in pairs:
        oc = characteristics(design, p.gain, round(v.sd_diff, 4))
        ps = state.pairs.get(p.key)
        if ps is not None and ps.decision is not None:
            now = f"{ps.decision.label} at {ps.decision.n}"
        elif ps is not None and ps.looks:
            now = f"open after {ps.looks[-1].n}"
        else:
            now = "not started"
        gain = "vs 0" if p.gain is None else f"{p.gain:+.1f}"
        lines.append(f"  {(p.ours.row + ' / ' + p.ours.column)[:40]:<40} {gain:>5}  "
                     f"{oc.type1_nominal:>6.1%}  {oc.power:>5.0%} {f'({oc.fixed_power:.0%})':>7}"
                     f"  {oc.seeds_null:>7.1f} / {oc.seeds_gain:<7.1f}        {now}")
    fixed = design.max_seeds * len(cells)
    runs = expected_runs(state, cells, v)
    hours = run_hours(records)
    cost = (f"; about {runs.null * hours:,.1f} / {runs.gain * hours:,.1f} device-hours against "
            f"{fixed * hours:,.1f} at the measured {hours:.2f} h per run" if hours is not None
            else "; device-hours once a run of this grid has been timed")
    sims = characteristics(design, pairs[0].gain, round(v.sd_diff, 4)).sims
    lines += [f"  type-I: futility ignored (non-binding); {sims:,} simulated pairs each "
              f"(standard error {100 * math.sqrt(0.05 * 0.95 / sims):.2f} points at 5%); "
              "power: efficacy in the gain's direction",
              f"  grid: about {runs.null:.0f} runs if no pair differs, {runs.gain:.0f} at the "
              f"paper's gains, against {fixed} with the fixed {design.max_seeds} seeds per cell"
              + cost]
    return lines
