"""Seed planning before GPU-hours: how many seeds detect the paper's gains, and what they cost.

ProtoSeg's gains (+0.6 to +1.5 mIoU) are the size of seed-to-seed noise, so one seed per cell
cannot tell a reproduction from noise. For each baseline/ours pair with paper numbers, the seeds
per cell that detect its gain at 80% power (paired two-sided t-test, 5%) given a per-run sigma:
`--sigma`, else measured from the grid's records (cells with 3 or more seeds), else the prior.
"""

from __future__ import annotations

import math

from benchmark.config import Cell
from benchmark.stats import (MIN_SEEDS_FOR_MEASURED_SIGMA, PAPER_SMALLEST_GAIN, SIGMA_PRIOR,
                             mean_std, paper_gains, planned_seeds, seeds_for_gain)
from benchmark.store import Record


def measured_sigma(records: list[Record]) -> tuple[float, int] | None:
    """Pooled per-run sd of mIoU over cells with >= 3 done seeds, and how many runs it used."""
    by_cell: dict[str, list[float]] = {}
    for r in records:
        if r.status == "done" and r.miou is not None:
            by_cell.setdefault(r.cell_key, []).append(float(r.miou))
    squares, dof, runs = 0.0, 0, 0
    for values in by_cell.values():
        if len(values) >= MIN_SEEDS_FOR_MEASURED_SIGMA:
            sd = mean_std(values)[1]
            squares += sd ** 2 * (len(values) - 1)
            dof += len(values) - 1
            runs += len(values)
    return (math.sqrt(squares / dof), runs) if dof else None


def run_hours(records: list[Record]) -> float | None:
    """Median GPU- (or CPU-process-) hours of the grid's done runs: (train + eval) x processes."""
    hours = sorted(((r.timings.train_s or 0) + (r.timings.eval_s or 0))
                   * max(1, r.world_size) / 3600 for r in records
                   if r.status == "done" and r.timings.train_s)
    return hours[len(hours) // 2] if hours else None


def planning_sd(records: list[Record], sigma: float | None = None) -> tuple[float, str]:
    """The per-run sd seed plans use and where it comes from: --sigma, else measured from
    cells with >= 3 done seeds, else the prior."""
    if sigma is not None:
        return sigma, "--sigma"
    measured = measured_sigma(records)
    if measured is not None:
        return measured[0], f"measured from {measured[1]} runs"
    return SIGMA_PRIOR, "prior"


def seed_plan(cells: list[Cell] | tuple[Cell, ...], records: list[Record], grid_seeds: int,
              sigma: float | None = None) -> list[str]:
    """The `--dry-run` lines: sigma used, seeds per pair and for the grid, and their cost."""
    used, source = planning_sd(records, sigma)
    lines = [f"seed plan: 80% power, two-sided 5%, per-run sigma {used:.2f} mIoU ({source})"]
    gains = paper_gains(cells)
    for g in gains:
        lines.append(f"  {g.row:<34} paper gain {g.gain:+.1f} -> {seeds_for_gain(g.gain, used)}"
                     " seeds per cell" if g.gain > 0 else
                     f"  {g.row:<34} paper gain {g.gain:+.1f}: nothing to detect")
    if not gains:
        lines.append(f"  no paper gains in this grid: planned for the paper's smallest gain "
                     f"{PAPER_SMALLEST_GAIN:+.1f}")
    need = planned_seeds(cells, used)
    runs = need * len(cells)
    hours = run_hours(records)
    cost = (f"about {runs * hours:,.0f} device-hours at the measured {hours:.2f} h per run"
            if hours is not None else
            "device-hours unknown until a run of this grid finishes (--preflight on a GPU "
            "times one step)")
    lines.append(f"  grid: {need} seeds per cell detect its smallest gain ({runs} runs, {cost}); "
                 f"the grid's default is {grid_seeds}" + ("" if grid_seeds >= need else
                                                          f", {need - grid_seeds} short of it"))
    return lines
