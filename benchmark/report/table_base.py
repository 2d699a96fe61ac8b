"""What every table layout shares: the result table type, numbers as text, the data columns of
a row and the notes (tables.py, switch_table.py and published_table.py build on it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd

from benchmark.config import Cell
from benchmark.report.aggregate import CellResult
from benchmark.stats import PairedDifference, Verdict

DASH = "–"  # shown where there is no number (en dash)
UP, DOWN, CHECK, REF = "↑", "↓", "✓", " (ref.)"
CHECKPOINT = " (checkpoint)"  # a result evaluated from a checkpoint (--checkpoint), not trained
PAIRED_HEADER = "Paired Δ (95% CI)"
LAYOUT_DATA_COLUMNS = ["kind", "status", "cell_key", "params_m", "miou_mean", "miou_std",
                       "n_seeds", "paper_params_m", "paper_miou", "gain", "paired_mean",
                       "paired_low", "paired_high", "paired_n"]
NOTES = {
    "reference": "(ref.): reference only, number quoted from the paper, not reproduced here.",
    "gain": "↑/↓: ours minus its baseline (difference of the mean mIoU over each one's seeds).",
    "paired": ("Paired Δ: mean over the n seeds both ran of (ours - baseline), with a 95% "
               "Student-t interval (n - 1 degrees of freedom); n = 1 gives no interval."),
    "std": "mean ± sample standard deviation over seeds.",
    "checkpoint": ("(checkpoint): evaluated from a checkpoint file (--checkpoint), not trained "
                   "here."),
}


@dataclass
class ResultTable:
    """A table ready to render: `frame` holds the display columns as text plus numeric data
    columns (for CSV); `bold` marks (row, column) cells; `notes` explain marks and symbols."""

    frame: pd.DataFrame
    columns: list[str]
    align: tuple[str, ...]
    notes: list[str] = field(default_factory=list)
    bold: set[tuple[int, str]] = field(default_factory=set)
    packages: tuple[str, ...] = ("booktabs",)


# --------------------------------------------------------------------------- numbers as text


def round1(value: float) -> float:
    """One decimal, ties away from zero as a reader rounds (0.35 -> 0.4, -1.15 -> -1.2).

    The value is first cut to 9 decimals so that equal numbers reached by different float
    arithmetic (a mean of differences, a difference of means) round alike.
    """
    exact = Decimal(repr(round(float(value), 9))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return float(exact) + 0.0  # + 0.0 turns -0.0 into 0.0


def fmt(value: float | None, signed: bool = False) -> str:
    """One decimal (optionally with a sign), or the dash for a missing number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    value = round1(value)
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def mean_text(res: CellResult) -> str:
    """`mean`, `mean ± std` (several seeds), or the status when there is no result."""
    if res.status != "done":
        return res.status
    mean, std = res.mean_std
    return fmt(mean) if res.n == 1 else f"{fmt(mean)} ± {fmt(std)}"


def gain_text(gain: float | None) -> str:
    if gain is None:
        return ""
    rounded = round1(gain)
    return f" {DOWN if rounded < 0 else UP}{abs(rounded):.1f}"


def paired_text(diff: PairedDifference | None) -> str:
    if diff is None:
        return DASH
    if not diff.has_interval:
        return f"{fmt(diff.mean, signed=True)} (n={diff.n})"
    return (f"{fmt(diff.mean, signed=True)} [{fmt(diff.low, signed=True)}, "
            f"{fmt(diff.high, signed=True)}] (n={diff.n})")


def verdict_text(verdict: Verdict | None) -> str:
    return DASH if verdict is None else verdict.text()


def number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def base_row(kind: str, cell: Cell | None, res: CellResult | None) -> dict[str, Any]:
    """The data columns shared by every layout (NaN where there is no number)."""
    mean, std = res.mean_std if res else (math.nan, math.nan)
    nan = math.nan
    return {
        "kind": kind, "status": res.status if res else "reference",
        "cell_key": cell.key if cell else "", "params_m": res.params_m if res else nan,
        "miou_mean": mean, "miou_std": std, "n_seeds": res.n if res else 0,
        "paper_params_m": number(cell.paper_params_m if cell else None),
        "paper_miou": number(cell.paper_miou if cell else None),
        "gain": nan, "paired_mean": nan, "paired_low": nan, "paired_high": nan, "paired_n": 0,
    }


def make_table(rows: list[dict[str, Any]], columns: list[str], align: tuple[str, ...],
                notes: list[str], bold: set[tuple[int, str]] | None = None,
                packages: tuple[str, ...] = ("booktabs",)) -> ResultTable:
    frame = pd.DataFrame(rows, columns=columns + LAYOUT_DATA_COLUMNS)
    frame = frame.astype({c: float for c in LAYOUT_DATA_COLUMNS
                          if c not in ("kind", "status", "cell_key", "n_seeds", "paired_n")})
    frame = frame.astype({"n_seeds": int, "paired_n": int})
    return ResultTable(frame, columns, align, notes, bold or set(), packages)
