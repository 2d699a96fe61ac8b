"""The `published` layout: published checkpoints evaluated by this suite (the `zoo` grid and
`--checkpoint` runs), from records of kind `published-checkpoint`, beside the published mIoU."""

from __future__ import annotations

import math
from pathlib import Path

from benchmark.config import Cell
from benchmark.report.table_base import DASH, ResultTable, base_row, make_table
from benchmark.store import Record

TOLERANCE = 0.1  # mIoU: the suite's target for a published checkpoint (README)
PUBLISHED_COLUMNS = ["Checkpoint", "Data", "Published mIoU (%)", "This suite (%)", "Δ",
                     f"Within {TOLERANCE}", "File (sha256)"]
PUBLISHED_NOTE = ("Published checkpoints evaluated without training (records of kind "
                  "published-checkpoint); missing: its file was not found, see the README's "
                  "'Check the suite against published checkpoints first'.")


def _num(value: float | None, signed: bool = False) -> str:
    """Two decimals, as the published numbers are printed (39.91)."""
    if value is None:
        return DASH
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _latest(records: list[Record]) -> dict[str, Record]:
    """The newest evaluated published-checkpoint record of each cell."""
    out: dict[str, Record] = {}
    for r in sorted(records, key=lambda r: r.finished or ""):
        if r.kind == "published-checkpoint" and r.status == "done" and r.miou is not None:
            out[r.cell_key] = r
    return out


def published_table(cells: list[Cell], records: list[Record]) -> ResultTable:
    """One row per cell: published vs this suite, the difference, and the file evaluated."""
    evaluated = _latest(records)
    rows = []
    for c in cells:
        rec = evaluated.get(c.key)
        row = base_row("other", c, None)
        miou = rec.miou if rec else None
        diff = miou - c.paper_miou if miou is not None and c.paper_miou is not None else None
        file = (f"{Path(rec.checkpoint.get('file', '')).name} "
                f"({str(rec.checkpoint.get('sha256', ''))[:12]})") if rec else "missing"
        row.update({"Checkpoint": c.row, "Data": c.column, "status": "done" if rec else "missing",
                    "Published mIoU (%)": _num(c.paper_miou), "This suite (%)": _num(miou),
                    "Δ": _num(diff, signed=True),
                    f"Within {TOLERANCE}": DASH if diff is None else
                    ("yes" if abs(diff) <= TOLERANCE + 1e-9 else "no"),
                    "File (sha256)": file, "miou_mean": math.nan if miou is None else miou,
                    "n_seeds": 1 if rec else 0})
        rows.append(row)
    return make_table(rows, PUBLISHED_COLUMNS, ("left", "left") + ("right",) * 4 + ("left",),
                       [PUBLISHED_NOTE])
