"""The `switches` layout: a reference cell and cells that each change one setting of it
(experiments/discrepancies.py), each with its paired difference to the reference and a verdict."""

from __future__ import annotations

from benchmark.config import Cell
from benchmark.report.aggregate import baselines, cell_results
from benchmark.report.table_base import (DASH, PAIRED_HEADER, ResultTable, base_row, make_table,
                                     mean_text, NOTES, paired_text, verdict_text)
from benchmark.report.verdicts import VERDICT_HEADER, verdict_notes, verdicts
from benchmark.stats import paired_difference
from benchmark.store import Record

SWITCH_COLUMNS = ["Setting", "mIoU (%)", PAIRED_HEADER, VERDICT_HEADER, "Seeds"]
SWITCH_NOTE = ("Paired Δ: switched minus the reference row over the seeds both ran, 95% "
               "Student-t interval; verdict against zero (the paper reports no such number).")


def switch_table(cells: list[Cell], records: list[Record]) -> ResultTable:
    """Reference row first (tag `baseline`), then one row per switched cell, grid order."""
    results = cell_results(cells, records)
    judged = verdicts(cells, results)
    base_of = baselines(cells)
    rows = []
    for c in cells:
        res = results[c.key]
        row = base_row("baseline" if c.tag == "baseline" else "other", c, res)
        base = base_of.get(c.pair) if c.tag != "baseline" else None
        paired = (paired_difference(results[base.key].miou_by_seed, res.miou_by_seed)
                  if base is not None and res.n else None)
        row.update({"Setting": c.row, "mIoU (%)": mean_text(res),
                    PAIRED_HEADER: paired_text(paired) if base is not None else DASH,
                    VERDICT_HEADER: verdict_text(judged[c.key]), "Seeds": str(res.n)})
        rows.append(row)
    notes = [SWITCH_NOTE] + ([NOTES["std"]] if any(r.n > 1 for r in results.values()) else [])
    notes += verdict_notes(judged)
    return make_table(rows, SWITCH_COLUMNS, ("left", "right", "right", "left", "right"), notes)
