"""Each cell's verdict against the paper (benchmark/stats.py holds the statistics).

"Ours" rows (and a `switches` grid's rows): the paired per-seed differences to their baseline,
against the paper's gain (or, where the paper has none, against zero). Other rows with a paper number (baselines, ablation
rows): their per-seed mIoU against that number. Rows without results or a reference: none.
"""

from __future__ import annotations

from benchmark.config import Cell
from benchmark.report.aggregate import CellResult, baselines
from benchmark.stats import Verdict, baseline_verdict, difference_verdict, gain_verdict

VERDICT_HEADER = "Verdict"
VERDICT_NOTE = ("Verdict: the 95% interval of ours - baseline (paired over seeds) against the "
                "paper's gain, or of a row's mIoU against the paper's number; 'inconclusive' "
                "says how many more seeds would decide at 80% power (seed-to-seed sigma measured "
                "from 3 or more seeds, else 0.5 mIoU assumed).")


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
            return gain_verdict(diffs, cell.paper_miou - base.paper_miou)
        return difference_verdict(diffs)
    if cell.paper_miou is not None and cell.tag != "ours":
        return baseline_verdict(list(res.miou_by_seed.values()), cell.paper_miou)
    return None


def verdicts(cells: list[Cell], results: dict[str, CellResult]) -> dict[str, Verdict | None]:
    """{cell key: verdict or None} for every cell of a grid."""
    base_of = baselines(cells)
    return {c.key: cell_verdict(c, results, base_of) for c in cells}
