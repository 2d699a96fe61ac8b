"""Each cell's verdict against the paper (benchmark/stats.py holds the statistics).

"Ours" rows (and a `switches` grid's rows): the paired per-seed differences to their baseline,
against the paper's gain (or, where the paper has none, against zero). Other rows with a paper number (baselines, ablation
rows): their per-seed mIoU against that number. Rows without results or a reference: none.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from typing import Iterator

from benchmark.config import Cell
from benchmark.looks import LookHistory, pair_key
from benchmark.report.aggregate import CellResult, baselines
from benchmark.stats import (Verdict, baseline_verdict, difference_verdict, gain_verdict,
                             mean_std)

VERDICT_HEADER = "Verdict"
VERDICT_NOTE = ("Verdict: the 95% interval of ours - baseline (paired over seeds) against the "
                "paper's gain, or of a row's mIoU against the paper's number; 'inconclusive' "
                "says how many more seeds would decide at 80% power (seed-to-seed sigma measured "
                "from 3 or more seeds, else 0.5 mIoU assumed).")


SEQUENTIAL_NOTE = ("Sequential (--seeds auto): seeds were added in waves and each pair "
                   "stopped when its verdict was decided by group-sequential boundaries that keep "
                   "the overall two-sided type-I error (docs/verdicts.md); its verdict reads the "
                   "repeated confidence interval, wider than the Paired Δ interval.")
REPEATED_NOTE = ("Not corrected for repeated looks: the table showed this pair at several seed "
                 "counts without --seeds auto, so its 95% interval is optimistic.")
_HISTORY: contextvars.ContextVar[LookHistory | None] = contextvars.ContextVar(
    "look_history", default=None)


@contextlib.contextmanager
def look_history(history: LookHistory) -> Iterator[None]:
    """Tables drawn inside read this grid's sequential state and looks log for their verdicts
    (benchmark/looks.py; `benchmark.cli.write_tables`); without it, fixed-seed wording."""
    token = _HISTORY.set(history)
    try:
        yield
    finally:
        _HISTORY.reset(token)


def _seeds_text(looks: list[int]) -> str:
    return ", ".join(map(str, looks))


def _how_looked(verdict: Verdict, key: str, history: LookHistory | None) -> Verdict:
    """The pair's verdict as its looks allow: the sequential decision (or that the study is
    still open) where `--seeds auto` looked at exactly these seeds; else today's verdict, noting
    repeated looks when the looks log shows several seed counts."""
    if history is None:
        return verdict
    state = history.state
    pair = state.pairs.get(key) if state is not None else None
    if pair is not None and pair.looks and pair.looks[-1].n == verdict.n:
        last, design = pair.looks[-1], state.design
        overall = f"sequential, overall {design.alpha:.0%}"
        if not last.decided:
            nxt = design.looks[len(pair.looks)]
            return dataclasses.replace(verdict, label="open", more_seeds=0, how=(
                f"after {last.n} of {design.max_seeds} seeds; next look at {nxt}; {overall}"))
        stop = ("stopped for futility at" if last.reason == "futility" else "stopped at") \
            if last.n < design.max_seeds else "at"
        return dataclasses.replace(verdict, label=last.label, low=last.low, high=last.high,
                                   more_seeds=0, how=(f"{stop} {last.n} of {design.max_seeds} "
                                                      f"seeds; {overall}"))
    counts = history.looks.get(key, [])
    if len(counts) >= 2:
        return dataclasses.replace(verdict, how=(
            f"interval not corrected for repeated looks at {_seeds_text(counts)} seeds"))
    return verdict


def _paired_diffs(ours: CellResult, base: CellResult) -> list[float]:
    seeds = sorted(set(ours.miou_by_seed) & set(base.miou_by_seed))
    return [ours.miou_by_seed[s] - base.miou_by_seed[s] for s in seeds]


def cell_verdict(cell: Cell, results: dict[str, CellResult],
                 base_of: dict[str, Cell]) -> Verdict | None:
    """The verdict of one cell, or None where there is nothing to judge."""
    res = results[cell.key]
    if not res.n:
        return None
    base = base_of.get(cell.pair) if cell.tag in ("ours", "switch") else None
    if base is not None:
        diffs = _paired_diffs(res, results[base.key])
        if not diffs:
            return None
        if cell.paper_miou is not None and base.paper_miou is not None:
            verdict = gain_verdict(diffs, cell.paper_miou - base.paper_miou)
        else:
            verdict = difference_verdict(diffs)
        return _how_looked(verdict, pair_key(base, cell), _HISTORY.get())
    if cell.paper_miou is not None and cell.tag != "ours":
        values = list(res.miou_by_seed.values())
        return _baseline_looked(baseline_verdict(values, cell.paper_miou), cell, values,
                                _HISTORY.get())
    return None


def _baseline_looked(verdict: Verdict, cell: Cell, values: list[float],
                     history: LookHistory | None) -> Verdict:
    """A baseline of a `--seeds auto` study, at one of its looks, is read off the repeated
    interval mean -+ c_k se of that look (its seeds were looked at in waves, too)."""
    state = history.state if history is not None else None
    if (state is None or verdict.n not in state.design.looks or verdict.n < 2
            or not any(key.startswith(f"{cell.key}/") for key in state.pairs)):
        return verdict
    k = state.design.looks.index(verdict.n)
    mean, sd = mean_std(values)
    half = state.boundaries.efficacy[k] * sd / math.sqrt(verdict.n)
    low, high = mean - half, mean + half
    label = ("matches the paper" if low <= verdict.target <= high else
             "below the paper" if high < verdict.target else "above the paper")
    return dataclasses.replace(verdict, label=label, low=low, high=high, more_seeds=0, how=(
        f"repeated interval at {verdict.n} of {state.design.max_seeds} seeds; sequential, "
        f"overall {state.design.alpha:.0%}"))


def verdict_notes(judged: dict[str, Verdict | None]) -> list[str]:
    """The notes the table's verdicts need beyond VERDICT_NOTE: sequential, repeated looks."""
    hows = [v.how for v in judged.values() if v is not None and v.how]
    return ([SEQUENTIAL_NOTE] if any("sequential" in h for h in hows) else []) + \
        ([REPEATED_NOTE] if any("repeated looks" in h for h in hows) else [])


def verdicts(cells: list[Cell], results: dict[str, CellResult]) -> dict[str, Verdict | None]:
    """{cell key: verdict or None} for every cell of a grid."""
    base_of = baselines(cells)
    return {c.key: cell_verdict(c, results, base_of) for c in cells}
