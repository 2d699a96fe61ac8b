"""Result tables in the paper's layouts, regenerated from run records (never edited by hand).

`grid_table` builds a grid's main table in its layout: `paper` (Tables 1-3: Method | Backbone |
# Param (M) | mIoU (%), the baseline row then "Ours" with its gain), `loss` (CE / PPC / PPD
checkmarks) or `k` (prototypes per class), each beside the paper's numbers; `per_class_table`
the per-class IoU (classes x methods) of any grid. The grid says its layout and reference rows
(experiments.Grid); benchmark/report/render.py writes the tables as Markdown, LaTeX and CSV.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import pandas as pd

from benchmark.config import Cell
from benchmark.report.aggregate import (CellResult, baselines, cell_results,
                                        evaluated_beside_trained, per_class_iou)
from benchmark.report.published_table import published_table
from benchmark.report.switch_table import switch_table
from benchmark.report.table_base import (CHECK, CHECKPOINT, DASH, NOTES, PAIRED_HEADER, REF,
                                         ResultTable, base_row, fmt, gain_text, make_table,
                                         mean_text, number, paired_text, round1, verdict_text)
from benchmark.report.verdicts import VERDICT_HEADER, VERDICT_NOTE, verdict_notes, verdicts
from benchmark.stats import paired_difference
from benchmark.store import Record

LAYOUTS = ("paper", "loss", "k", "switches", "published")
PAPER_LAYOUT_COLUMNS = ["Method", "Backbone", "# Param (M)", "mIoU (%)", "Paper # Param (M)",
                        "Paper mIoU (%)", "Δ paper", PAIRED_HEADER, VERDICT_HEADER, "Seeds"]
LOSS_LAYOUT_COLUMNS = ["CE", "PPC", "PPD", "mIoU (%)", "Paper mIoU (%)", "Δ paper",
                       VERDICT_HEADER, "Seeds"]
# Left out of a paper-layout table when the paper has no numbers for any of its rows
# (grids of our own such as smoke and camvid): columns of dashes only say nothing.
PAPER_ONLY_COLUMNS = ("Paper # Param (M)", "Paper mIoU (%)", "Δ paper")
K_LAYOUT_COLUMNS = ["# Prototype", "mIoU (%)", "Paper mIoU (%)", "Δ paper", VERDICT_HEADER,
                    "Seeds"]
REFERENCE_KEYS = ("method", "venue", "backbone", "params_m", "miou", "note")


# --------------------------------------------------------------------------- rows


def check_reference_rows(rows: Iterable[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Reference rows as given, after checking each has a method and an mIoU. Optional keys:
    venue (shown as "Method [venue]"), backbone, params_m, and a note such as
    "†: backbone pre-trained on ImageNet-22K" (its mark prefixes the method; the note goes
    under the table). Other keys are ignored."""
    rows = list(rows or [])
    for i, row in enumerate(rows):
        missing = [k for k in ("method", "miou") if row.get(k) in (None, "")]
        if missing:
            raise ValueError(f"reference row {i} ({row.get('method', '?')!r}) lacks "
                             f"{', '.join(missing)}; expected keys {', '.join(REFERENCE_KEYS)}")
    return rows


def _note_mark(note: str) -> str:
    """The footnote mark of a note written as "<mark>: <text>" (at most two characters)."""
    mark, colon, _ = note.partition(":")
    return mark.strip() if colon and 0 < len(mark.strip()) <= 2 else ""


def _reference_row(ref: dict[str, Any]) -> dict[str, Any]:
    row = base_row("reference", None, None)
    venue = f" [{ref['venue']}]" if ref.get("venue") else ""
    row.update({
        "Method": f"{_note_mark(ref.get('note') or '')}{ref['method']}{venue}{REF}",
        "Backbone": ref.get("backbone") or "",
        "# Param (M)": fmt(ref.get("params_m")), "mIoU (%)": fmt(ref["miou"]),
        "Paper # Param (M)": DASH, "Paper mIoU (%)": DASH, "Δ paper": DASH,
        PAIRED_HEADER: DASH, VERDICT_HEADER: DASH, "Seeds": DASH,
        "paper_params_m": number(ref.get("params_m")),
        "paper_miou": float(ref["miou"]),
    })
    return row


def _kind(cell: Cell) -> str:
    return cell.tag if cell.tag in ("baseline", "ours") else "other"


def _paper_row(c: Cell, results: dict[str, CellResult], base: Cell | None,
               previous: Cell | None) -> tuple[dict[str, Any], str | None]:
    """A cell's paper-layout row, and the key of its pair's better cell when it is an "ours"
    row with results on both sides (`base`: its baseline, None unless it is "ours")."""
    res = results[c.key]
    row = base_row(_kind(c), c, res)
    mean = row["miou_mean"]
    base_res = results[base.key] if base is not None else None
    gain = paired = paper_gain = better = None
    if base_res is not None and res.n and base_res.n:
        gain = mean - base_res.mean_std[0]
        paired = paired_difference(base_res.miou_by_seed, res.miou_by_seed)
        better = c.key if round1(gain) >= 0 else base.key
    if base is not None and c.paper_miou is not None and base.paper_miou is not None:
        paper_gain = c.paper_miou - base.paper_miou
    delta = mean - c.paper_miou if res.n and c.paper_miou is not None else None
    same_backbone = base is not None and previous is base and base.column == c.column
    row.update({
        "Method": c.row + (CHECKPOINT if res.from_checkpoint else ""),
        "Backbone": "" if same_backbone else c.column,
        "# Param (M)": fmt(res.params_m), "mIoU (%)": mean_text(res) + gain_text(gain),
        "Paper # Param (M)": fmt(c.paper_params_m),
        "Paper mIoU (%)": fmt(c.paper_miou) + gain_text(paper_gain),
        "Δ paper": fmt(delta, signed=True),
        PAIRED_HEADER: paired_text(paired) if row["kind"] == "ours" else DASH,
        "Seeds": str(res.n),
        "gain": math.nan if gain is None else gain,
    })
    if paired is not None:
        row.update(paired_mean=paired.mean, paired_n=paired.n,
                   paired_low=math.nan if paired.low is None else paired.low,
                   paired_high=math.nan if paired.high is None else paired.high)
    return row, better


def _paper_notes(cells: list[Cell], refs: list[dict[str, Any]], paired: bool,
                 results: dict[str, CellResult]) -> list[str]:
    """The notes under a paper-layout table: only those its rows need."""
    notes = [NOTES["reference"]] if refs else []
    if any(r.from_checkpoint for r in results.values()):
        notes.append(NOTES["checkpoint"])
    notes += list(dict.fromkeys(r["note"] for r in refs if r.get("note")))
    if paired and any(c.tag == "ours" for c in cells):
        notes += [NOTES["gain"], NOTES["paired"]]
    if any(r.n > 1 for r in results.values()):
        notes.append(NOTES["std"])
    return notes


# --------------------------------------------------------------------------- layouts


def paper_table(cells: list[Cell], records: list[Record],
                reference_rows: Iterable[dict[str, Any]] | None = None) -> ResultTable:
    """Tables 1-3 layout: reference rows first, then the cells in grid order; each "ours" row
    shows its gain over the baseline of its pair and the paired difference over common seeds."""
    refs = check_reference_rows(reference_rows)
    results = cell_results(cells, records)
    base_of = baselines(cells)
    rows = [_reference_row(r) for r in refs]
    index: dict[str, int] = {}  # cell_key -> row number
    better: list[str] = []  # cell keys of the better cell of each pair with results
    previous: Cell | None = None
    judged = verdicts(cells, results)
    evaluated = evaluated_beside_trained(cells, records)
    for c in cells:
        row, winner = _paper_row(c, results, base_of.get(c.pair) if _kind(c) == "ours" else None,
                                 previous)
        row[VERDICT_HEADER] = verdict_text(judged[c.key])
        if winner is not None:
            better.append(winner)
        index[c.key] = len(rows)
        rows.append(row)
        if c.key in evaluated:  # the same cell evaluated from a checkpoint: its own row
            extra, _ = _paper_row(c, {c.key: evaluated[c.key]}, None, c)
            rows.append({**extra, "kind": "other", PAIRED_HEADER: DASH, VERDICT_HEADER: DASH})
        previous = c
    bold = {(index[key], "mIoU (%)") for key in better}
    columns, align = PAPER_LAYOUT_COLUMNS, ("left", "left") + ("right",) * 6 + ("left", "right")
    if not refs and all(c.paper_miou is None and c.paper_params_m is None for c in cells):
        keep = [i for i, name in enumerate(columns) if name not in PAPER_ONLY_COLUMNS]
        columns, align = [columns[i] for i in keep], tuple(align[i] for i in keep)
    notes = _paper_notes(cells, refs, bool(base_of), {**results, **{
        f"{key} evaluated": res for key, res in evaluated.items()}})
    if any(judged.values()):
        notes += [VERDICT_NOTE] + verdict_notes(judged)
    return make_table(rows, columns, align, notes, bold)


def _ablation_rows(cells: list[Cell], records: list[Record],
                   labels: Callable[[Cell], dict[str, str]]
                   ) -> tuple[list[dict[str, Any]], bool, list[str] | None]:
    """One row per cell: `labels(cell)` then mIoU, the paper's number, Δ, verdict and seeds;
    whether any cell has several seeds, and the verdict notes ([] or more: some verdict)."""
    results = cell_results(cells, records)
    judged = verdicts(cells, results)
    rows = []
    for c in cells:
        res = results[c.key]
        row = base_row(_kind(c), c, res)
        row[VERDICT_HEADER] = verdict_text(judged[c.key])
        delta = row["miou_mean"] - c.paper_miou if res.n and c.paper_miou is not None else None
        row.update(labels(c))
        row.update({"mIoU (%)": mean_text(res), "Paper mIoU (%)": fmt(c.paper_miou),
                    "Δ paper": fmt(delta, signed=True), "Seeds": str(res.n)})
        rows.append(row)
    return rows, any(r.n > 1 for r in results.values()), verdict_notes(judged) if any(
        judged.values()) else None


def loss_terms(cell: Cell) -> dict[str, str]:
    """Checkmarks of the loss terms a cell trains with: CE always, PPC/PPD as its head says."""
    terms = cell.model.head.options.loss_names()
    return {"CE": CHECK, "PPC": CHECK if "ppc" in terms else "",
            "PPD": CHECK if "ppd" in terms else ""}


def loss_table(cells: list[Cell], records: list[Record]) -> ResultTable:
    """The loss ablation: CE / PPC / PPD checkmarks -> mIoU, beside the paper's numbers."""
    rows, multi, judged = _ablation_rows(cells, records, loss_terms)
    align = ("center",) * 3 + ("right",) * 3 + ("left", "right")
    return make_table(rows, LOSS_LAYOUT_COLUMNS, align,
                       _ablation_notes(multi, judged), packages=("booktabs", "amssymb"))


def k_table(cells: list[Cell], records: list[Record]) -> ResultTable:
    """The prototypes-per-class ablation: K -> mIoU, beside the paper's numbers."""
    def label(c: Cell) -> dict[str, str]:  # any head with a K option, plugins included
        k = getattr(c.model.head, "num_prototypes", None)
        return {"# Prototype": f"K = {k}" if k is not None else c.row}

    rows, multi, judged = _ablation_rows(cells, records, label)
    return make_table(rows, K_LAYOUT_COLUMNS, ("left",) + ("right",) * 3 + ("left", "right"),
                       _ablation_notes(multi, judged))


def _ablation_notes(multi_seed: bool, judged: list[str] | None) -> list[str]:
    return ([NOTES["std"]] if multi_seed else []) + (
        [VERDICT_NOTE] + judged if judged is not None else [])


def grid_table(cells: list[Cell], records: list[Record],
               reference_rows: Iterable[dict[str, Any]] | None = None,
               layout: str = "paper") -> ResultTable:
    """A grid's main table in its layout (`paper`, `loss`, `k`, `switches` or `published`:
    the grid's `layout`)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown table layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "loss":
        return loss_table(cells, records)
    if layout == "k":
        return k_table(cells, records)
    if layout == "switches":
        return switch_table(cells, records)
    if layout == "published":
        return published_table(cells, records)
    return paper_table(cells, records, reference_rows)


def per_class_table(cells: list[Cell], records: list[Record]) -> ResultTable:
    """Per-class IoU (%) as a table: one row per class, one column per method, plus the mIoU;
    the CSV also holds the numbers (`<method> [mean]`, `<method> [std]`, over seeds)."""
    mean, std = per_class_iou(cells, records)
    results = cell_results(cells, records)
    labels = list(mean.columns)
    rows = []
    for name in mean.index:
        row = {"Class": name, **{m: fmt(v) for m, v in mean.loc[name].items()}}
        row.update({f"{m} [mean]": mean.loc[name, m] for m in labels})
        row.update({f"{m} [std]": std.loc[name, m] for m in labels})
        rows.append(row)
    miou = {"Class": "mIoU"}
    for label, cell in zip(labels, cells):
        res = results[cell.key]
        miou[label] = fmt(res.mean_std[0]) if res.n else res.status
        miou[f"{label} [mean]"], miou[f"{label} [std]"] = res.mean_std
    rows.append(miou)
    columns = ["Class"] + labels
    data = [f"{m} [mean]" for m in labels] + [f"{m} [std]" for m in labels]
    frame = pd.DataFrame(rows, columns=columns + data).astype({c: float for c in data})
    return ResultTable(frame, columns, ("left",) + ("right",) * len(labels),
                       ["IoU (%) per class, mean over seeds; – = no result."])
