"""Run records -> what each grid cell has: finished runs by seed, status, parameters, per-class IoU.

Tables and figures both read records (`benchmark.store.Record`) through these functions, so a
record is interpreted one way everywhere: only `done` records with an mIoU count, the first one
per (cell, seed) wins, and cells are identified by their key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import pandas as pd

from benchmark.config import Cell
from benchmark.stats import mean_std
from benchmark.store import Record


def done_by_seed(records: list[Record], kind: str | None = None) -> dict[str, dict[int, Record]]:
    """Finished records with an mIoU, as {cell_key: {seed: record}} (seeds sorted).

    A cell's trained runs stand for it; a published checkpoint's evaluation stands in only for
    a cell without any (`kind` picks one kind instead). Kept separate so paired comparisons
    (baseline vs ours on the same seed) can reuse it.
    """
    finished = [r for r in records if r.status == "done" and r.miou is not None]
    trained = {r.cell_key for r in finished if r.kind == "trained"}
    out: dict[str, dict[int, Record]] = {}
    for rec in finished:
        wanted = (rec.kind == kind if kind is not None
                  else rec.kind == "trained" or rec.cell_key not in trained)
        if wanted:
            out.setdefault(rec.cell_key, {}).setdefault(int(rec.seed), rec)
    return {key: dict(sorted(seeds.items())) for key, seeds in out.items()}


def records_by_cell(records: list[Record]) -> dict[str, list[Record]]:
    """Every record (any status) grouped by cell key, in the order given."""
    out: dict[str, list[Record]] = {}
    for rec in records:
        out.setdefault(rec.cell_key, []).append(rec)
    return out


def cell_status(n_done: int, cell_records: list[Record]) -> str:
    """`done` with at least one finished run, else `failed` if a run failed, else `pending`."""
    if n_done:
        return "done"
    return "failed" if any(r.status == "failed" for r in cell_records) else "pending"


def params_m(done: list[Record]) -> float:
    """Learnable parameters in millions (1 decimal) from the first done record that has them."""
    for rec in done:
        learnable = rec.params.learnable
        if learnable is not None:
            return round(learnable / 1e6, 1)
    return math.nan


@dataclass(frozen=True)
class CellResult:
    """What the records say about one cell: status, mIoU per seed, params, and whether any
    result was evaluated from a checkpoint instead of trained here."""

    status: str
    miou_by_seed: dict[int, float]
    params_m: float
    from_checkpoint: bool = False

    @property
    def mean_std(self) -> tuple[float, float]:
        return mean_std(list(self.miou_by_seed.values()))

    @property
    def n(self) -> int:
        return len(self.miou_by_seed)


def cell_results(cells: list[Cell], records: list[Record]) -> dict[str, CellResult]:
    """{cell_key: CellResult} for every cell (pending when it has no record)."""
    done = done_by_seed(records)
    by_key = records_by_cell(records)
    out = {}
    for c in cells:
        seeds = done.get(c.key, {})
        out[c.key] = CellResult(cell_status(len(seeds), by_key.get(c.key, [])),
                                {s: r.miou for s, r in seeds.items()},
                                params_m(list(seeds.values())),
                                any(r.kind == "published-checkpoint" for r in seeds.values()))
    return out


def evaluated_beside_trained(cells: list[Cell], records: list[Record]) -> dict[str, CellResult]:
    """{cell_key: the published checkpoint's evaluation} of cells that also have trained runs:
    tables show it as a row of its own, labelled as evaluated, next to the trained row."""
    trained = done_by_seed(records, kind="trained")
    evaluated = done_by_seed(records, kind="published-checkpoint")
    return {c.key: CellResult("done", {s: r.miou for s, r in evaluated[c.key].items()},
                              params_m(list(evaluated[c.key].values())), True)
            for c in cells if c.key in trained and c.key in evaluated}


def method_labels(cells: list[Cell]) -> list[str]:
    """Column labels for cells: the row label, plus the backbone where rows repeat."""
    rows = [c.row for c in cells]
    labels = [r if rows.count(r) == 1 else f"{r} ({c.column})" for r, c in zip(rows, cells)]
    return [lab if labels.count(lab) == 1 else f"{lab} [{c.key}]" for lab, c in zip(labels, cells)]


def per_class_iou(cells: list[Cell], records: list[Record]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and sample std over seeds of each class's IoU (%): two frames, classes x methods.

    Classes follow the first record's order; a class with no IoU in a run (absent from labels
    and predictions) is left out of that cell's mean; cells without results are all NaN.
    """
    done = done_by_seed(records)
    classes: list[str] = []
    values: dict[str, dict[str, list[float]]] = {}
    for c in cells:
        for rec in done.get(c.key, {}).values():
            for name, iou in (rec.metrics.per_class_iou or {}).items():
                if name not in classes:
                    classes.append(name)
                if iou is not None and math.isfinite(iou):
                    values.setdefault(c.key, {}).setdefault(name, []).append(float(iou))
    labels = method_labels(cells)
    mean = pd.DataFrame(math.nan, index=pd.Index(classes, name="Class"), columns=labels)
    std = mean.copy()
    for c, label in zip(cells, labels):
        for name, ious in values.get(c.key, {}).items():
            mean.loc[name, label], std.loc[name, label] = mean_std(ious)
    return mean, std


def baselines(cells: list[Cell]) -> dict[str, Cell]:
    """{pair id: baseline cell}; two baselines in one pair is a grid error."""
    out: dict[str, Cell] = {}
    for c in cells:
        if c.tag == "baseline" and c.pair:
            if c.pair in out:
                raise ValueError(f"pair {c.pair!r} has two baseline cells ({out[c.pair].row!r}, "
                                 f"{c.row!r}); give each baseline its own pair id")
            out[c.pair] = c
    return out


def pairs(cells: list[Cell]) -> list[tuple[str, Cell, Cell]]:
    """(pair id, baseline, ours) for each ours cell whose pair has a baseline, grid order."""
    base = baselines(cells)
    return [(c.pair, base[c.pair], c) for c in cells if c.tag == "ours" and c.pair in base]
