"""Result tables: one row per grid cell, regenerated from run records (never edited by hand).

`summarize` turns cells + records into a one-row-per-cell DataFrame (`format_markdown` /
`format_latex` print it). `grid_table` builds the paper's layout of a grid (Tables 1-3, the loss
and K ablations) and `per_class_table` the per-class IoU; `render` writes both as Markdown,
LaTeX (booktabs) and CSV, atomically.
"""

from __future__ import annotations

import importlib.util
import math
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from tabulate import tabulate

from benchmark.config import Cell
from benchmark.stats import PairedDifference, mean_std, paired_difference

DASH = "–"  # shown where there is no number (en dash)
DISPLAY_COLUMNS = ["Method", "Backbone", "Params (M)", "mIoU (%)", "Seeds", "Paper", "Δ paper"]
DATA_COLUMNS = ["miou_mean", "miou_std", "n_seeds", "status", "cell_key"]
COLUMNS = DISPLAY_COLUMNS + DATA_COLUMNS
# Text columns are left-aligned, numbers right-aligned (same order as DISPLAY_COLUMNS).
_ALIGN = ("left", "left", "right", "right", "right", "right", "right")
# Symbols -> LaTeX, applied after tabulate has escaped the specials (booktabs output has no |).
_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", DASH: "--", "|": r"\textbar{}"}


# --------------------------------------------------------------------------- records


def _miou(record: dict[str, Any]) -> float | None:
    """The record's mIoU (percent), or None when it has none."""
    value = (record.get("metrics") or {}).get("miou")
    return None if value is None else float(value)


def done_by_seed(records: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """Finished records with an mIoU, as {cell_key: {seed: record}} (seeds sorted).

    Kept separate so paired comparisons (baseline vs ours on the same seed) can reuse it.
    """
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for rec in records:
        if rec.get("status") == "done" and _miou(rec) is not None:
            out.setdefault(rec["cell_key"], {}).setdefault(int(rec["seed"]), rec)
    return {key: dict(sorted(seeds.items())) for key, seeds in out.items()}


def _params_m(done: list[dict[str, Any]]) -> float:
    """Learnable parameters in millions (1 decimal) from the first done record that has them."""
    for rec in done:
        learnable = (rec.get("params") or {}).get("learnable")
        if learnable is not None:
            return round(learnable / 1e6, 1)
    return math.nan


# --------------------------------------------------------------------------- formatting


def round1(value: float) -> float:
    """One decimal, ties away from zero as a reader rounds (0.35 -> 0.4, -1.15 -> -1.2).

    The value is first cut to 9 decimals so that equal numbers reached by different float
    arithmetic (a mean of differences, a difference of means) round alike.
    """
    exact = Decimal(repr(round(float(value), 9))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return float(exact) + 0.0  # + 0.0 turns -0.0 into 0.0


def _fmt(value: float | None, signed: bool = False) -> str:
    """One decimal (optionally with a sign), or the dash for a missing number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    value = round1(value)
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _miou_text(status: str, mean: float, std: float, n: int) -> str:
    """`mean ± std`, a bare mean for one seed, or the status when there is no result."""
    if status != "done":
        return status
    return _fmt(mean) if n == 1 else f"{_fmt(mean)} ± {_fmt(std)}"


def _status(n_done: int, cell_records: list[dict[str, Any]]) -> str:
    if n_done:
        return "done"
    return "failed" if any(r.get("status") == "failed" for r in cell_records) else "pending"


# --------------------------------------------------------------------------- summary


def _cell_row(cell: Cell, done: list[dict[str, Any]], cell_records: list[dict[str, Any]]) -> dict:
    """The table row of one cell from its done records (by seed) and all its records."""
    mious = [_miou(r) for r in done]
    n = len(mious)
    mean = statistics.fmean(mious) if n else math.nan
    std = statistics.stdev(mious) if n > 1 else math.nan  # sample std (ddof=1)
    status = _status(n, cell_records)
    delta = mean - cell.paper_miou if n and cell.paper_miou is not None else None
    return {
        "Method": cell.row,
        "Backbone": cell.column,
        "Params (M)": _params_m(done),
        "mIoU (%)": _miou_text(status, mean, std, n),
        "Seeds": n,
        "Paper": _fmt(cell.paper_miou),
        "Δ paper": _fmt(delta, signed=True),
        "miou_mean": mean,
        "miou_std": std,
        "n_seeds": n,
        "status": status,
        "cell_key": cell.key,
    }


def summarize(cells: list[Cell], records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell in grid order; records whose cell_key matches no cell are ignored."""
    done = done_by_seed(records)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_key.setdefault(rec.get("cell_key"), []).append(rec)
    rows = [
        _cell_row(c, list(done.get(c.key, {}).values()), by_key.get(c.key, [])) for c in cells
    ]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"Params (M)": float, "Seeds": int, "miou_mean": float,
                      "miou_std": float, "n_seeds": int})


# --------------------------------------------------------------------------- rendering


def _display_rows(df: pd.DataFrame) -> list[list[str]]:
    """The display columns as strings (numbers already rounded), ready for tabulate."""
    rows = []
    for rec in df[DISPLAY_COLUMNS].to_dict("records"):
        rec["Params (M)"] = _fmt(rec["Params (M)"])
        rec["Seeds"] = str(int(rec["Seeds"]))
        rows.append([str(rec[c]) for c in DISPLAY_COLUMNS])
    return rows


def _table(rows: list[list[str]], headers: list[str], tablefmt: str) -> str:
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True,
                    colalign=_ALIGN)


def format_markdown(df: pd.DataFrame) -> str:
    """GitHub Markdown table of the display columns (ends with a newline)."""
    rows = [[v.replace("|", r"\|") for v in row] for row in _display_rows(df)]
    return _table(rows, DISPLAY_COLUMNS, "github") + "\n"


def format_latex(df: pd.DataFrame, grid: str | None = None) -> str:
    """booktabs tabular of the display columns: specials escaped, ±/Δ as math (ends with \\n)."""
    text = _table(_display_rows(df), DISPLAY_COLUMNS, "latex_booktabs")
    for symbol, latex in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, latex)
    header = ["% requires \\usepackage{booktabs}"]
    if grid is not None:
        header.append(f"% grid: {grid} (generated by benchmark.report.tables from run records)")
    return "\n".join(header + [text]) + "\n"


def write_text_atomic(path: Path, text: str) -> Path:
    """Write text to a temp file in the same folder, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# =========================================================================== paper layouts
# The tables of the paper: Tables 1-3 (Method | Backbone | # Param (M) | mIoU (%), baseline row
# then "Ours" with its gain), the loss-term ablation (CE / PPC / PPD checkmarks) and the K
# ablation, each beside the paper's numbers; plus per-class IoU (classes x methods) for any grid.

UP, DOWN, CHECK, REF = "↑", "↓", "✓", " (ref.)"
LAYOUTS = ("paper", "loss", "k")
# Grids named here get an ablation layout; every other grid gets the paper layout.
GRID_LAYOUTS = {"ablation_loss": "loss", "ablation_k": "k"}
PAIRED_HEADER = "Paired Δ (95% CI)"
PAPER_LAYOUT_COLUMNS = ["Method", "Backbone", "# Param (M)", "mIoU (%)", "Paper # Param (M)",
                        "Paper mIoU (%)", "Δ paper", PAIRED_HEADER, "Seeds"]
LOSS_LAYOUT_COLUMNS = ["CE", "PPC", "PPD", "mIoU (%)", "Paper mIoU (%)", "Δ paper", "Seeds"]
# Left out of a paper-layout table when the paper has no numbers for any of its rows
# (grids of our own such as smoke and camvid): columns of dashes only say nothing.
PAPER_ONLY_COLUMNS = ("Paper # Param (M)", "Paper mIoU (%)", "Δ paper")
K_LAYOUT_COLUMNS = ["# Prototype", "mIoU (%)", "Paper mIoU (%)", "Δ paper", "Seeds"]
LAYOUT_DATA_COLUMNS = ["kind", "status", "cell_key", "params_m", "miou_mean", "miou_std",
                       "n_seeds", "paper_params_m", "paper_miou", "gain", "paired_mean",
                       "paired_low", "paired_high", "paired_n"]
REFERENCE_KEYS = ("method", "venue", "backbone", "params_m", "miou", "note")
_BOLD_OPEN, _BOLD_CLOSE = "\ue000", "\ue001"  # placeholders that survive tabulate's escaping
_LATEX_LAYOUT_SYMBOLS = {
    **_LATEX_SYMBOLS, UP: r"$\uparrow$", DOWN: r"$\downarrow$", CHECK: r"\checkmark",
    "†": r"$^\dagger$", _BOLD_OPEN: r"\textbf{", _BOLD_CLOSE: "}",
}
_NOTES = {
    "reference": "(ref.): reference only, number quoted from the paper, not reproduced here.",
    "gain": "↑/↓: ours minus its baseline (difference of the mean mIoU over each one's seeds).",
    "paired": ("Paired Δ: mean over the n seeds both ran of (ours - baseline), with a 95% "
               "Student-t interval (n - 1 degrees of freedom); n = 1 gives no interval."),
    "std": "mean ± sample standard deviation over seeds.",
}


@dataclass
class Table:
    """A rendered-ready table: `frame` holds the display columns as text plus numeric data
    columns (for CSV); `bold` marks (row, column) cells; `notes` explain marks and symbols."""

    frame: pd.DataFrame
    columns: list[str]
    align: tuple[str, ...]
    notes: list[str] = field(default_factory=list)
    bold: set[tuple[int, str]] = field(default_factory=set)
    packages: tuple[str, ...] = ("booktabs",)


@dataclass(frozen=True)
class CellResult:
    """What the records say about one cell: status, mIoU per seed, params."""

    status: str
    miou_by_seed: dict[int, float]
    params_m: float

    @property
    def mean_std(self) -> tuple[float, float]:
        return mean_std(list(self.miou_by_seed.values()))

    @property
    def n(self) -> int:
        return len(self.miou_by_seed)


def cell_results(cells: list[Cell], records: list[dict[str, Any]]) -> dict[str, CellResult]:
    """{cell_key: CellResult} for every cell (pending when it has no record)."""
    done = done_by_seed(records)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_key.setdefault(rec.get("cell_key"), []).append(rec)
    out = {}
    for c in cells:
        seeds = done.get(c.key, {})
        out[c.key] = CellResult(_status(len(seeds), by_key.get(c.key, [])),
                                {s: _miou(r) for s, r in seeds.items()},
                                _params_m(list(seeds.values())))
    return out


def layout_for(grid: str) -> str:
    """The table layout of a grid: `loss` / `k` for the ablations, `paper` otherwise."""
    return GRID_LAYOUTS.get(grid, "paper")


def check_reference_rows(rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
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


def _baselines(cells: list[Cell]) -> dict[str, Cell]:
    """{pair id: baseline cell}; two baselines in one pair is a grid error."""
    out: dict[str, Cell] = {}
    for c in cells:
        if c.tag == "baseline" and c.pair:
            if c.pair in out:
                raise ValueError(f"pair {c.pair!r} has two baseline cells ({out[c.pair].row!r}, "
                                 f"{c.row!r}); give each baseline its own pair id")
            out[c.pair] = c
    return out


def _mean_text(res: CellResult) -> str:
    """`mean`, `mean ± std` (several seeds), or the status when there is no result."""
    mean, std = res.mean_std
    return _miou_text(res.status, mean, std, res.n)


def _gain_text(gain: float | None) -> str:
    if gain is None:
        return ""
    rounded = round1(gain)
    return f" {DOWN if rounded < 0 else UP}{abs(rounded):.1f}"


def _paired_text(diff: PairedDifference | None) -> str:
    if diff is None:
        return DASH
    if not diff.has_interval:
        return f"{_fmt(diff.mean, signed=True)} (n={diff.n})"
    return (f"{_fmt(diff.mean, signed=True)} [{_fmt(diff.low, signed=True)}, "
            f"{_fmt(diff.high, signed=True)}] (n={diff.n})")


def _base_row(kind: str, cell: Cell | None, res: CellResult | None) -> dict[str, Any]:
    """The data columns shared by every layout (NaN where there is no number)."""
    mean, std = res.mean_std if res else (math.nan, math.nan)
    nan = math.nan
    return {
        "kind": kind, "status": res.status if res else "reference",
        "cell_key": cell.key if cell else "", "params_m": res.params_m if res else nan,
        "miou_mean": mean, "miou_std": std, "n_seeds": res.n if res else 0,
        "paper_params_m": _number(cell.paper_params_m if cell else None),
        "paper_miou": _number(cell.paper_miou if cell else None),
        "gain": nan, "paired_mean": nan, "paired_low": nan, "paired_high": nan, "paired_n": 0,
    }


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _note_mark(note: str) -> str:
    """The footnote mark of a note written as "<mark>: <text>" (at most two characters)."""
    mark, colon, _ = note.partition(":")
    return mark.strip() if colon and 0 < len(mark.strip()) <= 2 else ""


def _reference_row(ref: dict[str, Any]) -> dict[str, Any]:
    row = _base_row("reference", None, None)
    venue = f" [{ref['venue']}]" if ref.get("venue") else ""
    row.update({
        "Method": f"{_note_mark(ref.get('note') or '')}{ref['method']}{venue}{REF}",
        "Backbone": ref.get("backbone") or "",
        "# Param (M)": _fmt(ref.get("params_m")), "mIoU (%)": _fmt(ref["miou"]),
        "Paper # Param (M)": DASH, "Paper mIoU (%)": DASH, "Δ paper": DASH,
        PAIRED_HEADER: DASH, "Seeds": DASH,
        "paper_params_m": _number(ref.get("params_m")),
        "paper_miou": float(ref["miou"]),
    })
    return row


def paper_table(cells: list[Cell], records: list[dict[str, Any]],
                reference_rows: list[dict[str, Any]] | None = None) -> Table:
    """Tables 1-3 layout: reference rows first, then the cells in grid order; each "ours" row
    shows its gain over the baseline of its pair and the paired difference over common seeds."""
    refs = check_reference_rows(reference_rows)
    results = cell_results(cells, records)
    baselines = _baselines(cells)
    rows = [_reference_row(r) for r in refs]
    index: dict[str, int] = {}  # cell_key -> row number
    better: list[str] = []  # cell keys of the better cell of each pair with results
    previous: Cell | None = None
    for c in cells:
        res = results[c.key]
        kind = c.tag if c.tag in ("baseline", "ours") else "other"
        row = _base_row(kind, c, res)
        mean = row["miou_mean"]
        base = baselines.get(c.pair) if kind == "ours" else None
        base_res = results[base.key] if base is not None else None
        gain = paired = paper_gain = None
        if base_res is not None and res.n and base_res.n:
            gain = mean - base_res.mean_std[0]
            paired = paired_difference(base_res.miou_by_seed, res.miou_by_seed)
            better.append(c.key if round1(gain) >= 0 else base.key)
        if base is not None and c.paper_miou is not None and base.paper_miou is not None:
            paper_gain = c.paper_miou - base.paper_miou
        delta = mean - c.paper_miou if res.n and c.paper_miou is not None else None
        same_backbone = base is not None and previous is base and base.column == c.column
        row.update({
            "Method": c.row, "Backbone": "" if same_backbone else c.column,
            "# Param (M)": _fmt(res.params_m), "mIoU (%)": _mean_text(res) + _gain_text(gain),
            "Paper # Param (M)": _fmt(c.paper_params_m),
            "Paper mIoU (%)": _fmt(c.paper_miou) + _gain_text(paper_gain),
            "Δ paper": _fmt(delta, signed=True),
            PAIRED_HEADER: _paired_text(paired) if kind == "ours" else DASH,
            "Seeds": str(res.n),
            "gain": math.nan if gain is None else gain,
        })
        if paired is not None:
            row.update(paired_mean=paired.mean, paired_n=paired.n,
                       paired_low=math.nan if paired.low is None else paired.low,
                       paired_high=math.nan if paired.high is None else paired.high)
        index[c.key] = len(rows)
        rows.append(row)
        previous = c
    notes = [_NOTES["reference"]] if refs else []
    notes += list(dict.fromkeys(r["note"] for r in refs if r.get("note")))
    if baselines and any(c.tag == "ours" for c in cells):
        notes += [_NOTES["gain"], _NOTES["paired"]]
    if any(r.n > 1 for r in results.values()):
        notes.append(_NOTES["std"])
    bold = {(index[key], "mIoU (%)") for key in better}
    columns, align = PAPER_LAYOUT_COLUMNS, ("left", "left") + ("right",) * 7
    if not refs and all(c.paper_miou is None and c.paper_params_m is None for c in cells):
        keep = [i for i, name in enumerate(columns) if name not in PAPER_ONLY_COLUMNS]
        columns, align = [columns[i] for i in keep], tuple(align[i] for i in keep)
    return _make_table(rows, columns, align, notes, bold)


def _ablation_rows(cells: list[Cell], records: list[dict[str, Any]],
                   labels: Callable[[Cell], dict[str, str]]) -> tuple[list[dict[str, Any]], bool]:
    """One row per cell: `labels(cell)` then mIoU, the paper's number, Δ and seeds."""
    results = cell_results(cells, records)
    rows = []
    for c in cells:
        res = results[c.key]
        row = _base_row(c.tag if c.tag in ("baseline", "ours") else "other", c, res)
        delta = row["miou_mean"] - c.paper_miou if res.n and c.paper_miou is not None else None
        row.update(labels(c))
        row.update({"mIoU (%)": _mean_text(res), "Paper mIoU (%)": _fmt(c.paper_miou),
                    "Δ paper": _fmt(delta, signed=True), "Seeds": str(res.n)})
        rows.append(row)
    return rows, any(r.n > 1 for r in results.values())


def loss_terms(cell: Cell) -> dict[str, str]:
    """Checkmarks of the loss terms a cell trains with: CE always, PPC/PPD when weighted > 0."""
    head = cell.model.head
    proto = head.name == "prototype"
    return {"CE": CHECK, "PPC": CHECK if proto and head.ppc_weight > 0 else "",
            "PPD": CHECK if proto and head.ppd_weight > 0 else ""}


def loss_table(cells: list[Cell], records: list[dict[str, Any]]) -> Table:
    """The loss ablation: CE / PPC / PPD checkmarks -> mIoU, beside the paper's numbers."""
    rows, multi = _ablation_rows(cells, records, loss_terms)
    return _make_table(rows, LOSS_LAYOUT_COLUMNS, ("center",) * 3 + ("right",) * 4,
                       [_NOTES["std"]] if multi else [], packages=("booktabs", "amssymb"))


def k_table(cells: list[Cell], records: list[dict[str, Any]]) -> Table:
    """The prototypes-per-class ablation: K -> mIoU, beside the paper's numbers."""
    rows, multi = _ablation_rows(cells, records, lambda c: {"# Prototype": (
        f"K = {c.model.head.num_prototypes}" if c.model.head.name == "prototype" else c.row)})
    return _make_table(rows, K_LAYOUT_COLUMNS, ("left",) + ("right",) * 4,
                       [_NOTES["std"]] if multi else [])


def _make_table(rows: list[dict[str, Any]], columns: list[str], align: tuple[str, ...],
                notes: list[str], bold: set[tuple[int, str]] | None = None,
                packages: tuple[str, ...] = ("booktabs",)) -> Table:
    frame = pd.DataFrame(rows, columns=columns + LAYOUT_DATA_COLUMNS)
    frame = frame.astype({c: float for c in LAYOUT_DATA_COLUMNS
                          if c not in ("kind", "status", "cell_key", "n_seeds", "paired_n")})
    frame = frame.astype({"n_seeds": int, "paired_n": int})
    return Table(frame, columns, align, notes, bold or set(), packages)


def grid_table(grid: str, cells: list[Cell], records: list[dict[str, Any]],
               reference_rows: list[dict[str, Any]] | None = None,
               layout: str | None = None) -> Table:
    """The grid's main table in its layout (`paper`, `loss` or `k`; default from the name)."""
    layout = layout or layout_for(grid)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown table layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "loss":
        return loss_table(cells, records)
    if layout == "k":
        return k_table(cells, records)
    return paper_table(cells, records, reference_rows)


# --------------------------------------------------------------------------- per-class IoU


def method_labels(cells: list[Cell]) -> list[str]:
    """Column labels for cells: the row label, plus the backbone where rows repeat."""
    rows = [c.row for c in cells]
    labels = [r if rows.count(r) == 1 else f"{r} ({c.column})" for r, c in zip(rows, cells)]
    return [lab if labels.count(lab) == 1 else f"{lab} [{c.key}]" for lab, c in zip(labels, cells)]


def per_class_iou(cells: list[Cell], records: list[dict[str, Any]]
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and sample std over seeds of each class's IoU (%): two frames, classes x methods.

    Classes follow the first record's order; a class with no IoU in a run (absent from labels
    and predictions) is left out of that cell's mean; cells without results are all NaN.
    """
    done = done_by_seed(records)
    classes: list[str] = []
    values: dict[str, dict[str, list[float]]] = {}
    for c in cells:
        for rec in done.get(c.key, {}).values():
            for name, iou in ((rec.get("metrics") or {}).get("per_class_iou") or {}).items():
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


def per_class_table(cells: list[Cell], records: list[dict[str, Any]]) -> Table:
    """Per-class IoU (%) as a table: one row per class, one column per method, plus the mIoU;
    the CSV also holds the numbers (`<method> [mean]`, `<method> [std]`, over seeds)."""
    mean, std = per_class_iou(cells, records)
    results = cell_results(cells, records)
    labels = list(mean.columns)
    rows = []
    for name in mean.index:
        row = {"Class": name, **{m: _fmt(v) for m, v in mean.loc[name].items()}}
        row.update({f"{m} [mean]": mean.loc[name, m] for m in labels})
        row.update({f"{m} [std]": std.loc[name, m] for m in labels})
        rows.append(row)
    miou = {"Class": "mIoU"}
    for label, cell in zip(labels, cells):
        res = results[cell.key]
        miou[label] = _fmt(res.mean_std[0]) if res.n else res.status
        miou[f"{label} [mean]"], miou[f"{label} [std]"] = res.mean_std
    rows.append(miou)
    columns = ["Class"] + labels
    data = [f"{m} [mean]" for m in labels] + [f"{m} [std]" for m in labels]
    frame = pd.DataFrame(rows, columns=columns + data).astype({c: float for c in data})
    return Table(frame, columns, ("left",) + ("right",) * len(labels),
                 ["IoU (%) per class, mean over seeds; – = no result."])


# --------------------------------------------------------------------------- text formats


def _cells_text(table: Table, bold_open: str, bold_close: str) -> list[list[str]]:
    rows = []
    for i, rec in enumerate(table.frame[table.columns].to_dict("records")):
        row = []
        for col in table.columns:
            text = str(rec[col])
            row.append(f"{bold_open}{text}{bold_close}" if (i, col) in table.bold else text)
        rows.append(row)
    return rows


def table_markdown(table: Table) -> str:
    """GitHub Markdown: the table, then its notes as an italic paragraph (ends with a newline)."""
    rows = [[v.replace("|", r"\|") for v in row] for row in _cells_text(table, "**", "**")]
    text = tabulate(rows, headers=table.columns, tablefmt="github", disable_numparse=True,
                    colalign=table.align)
    if table.notes:
        text += "\n\n" + "\n".join(f"_{n}_  " if i < len(table.notes) - 1 else f"_{n}_"
                                   for i, n in enumerate(table.notes))
    return text + "\n"


def table_latex(table: Table, grid: str | None = None) -> str:
    """booktabs tabular with \\textbf on the better of each pair; notes as comments (ends \\n)."""
    text = tabulate(_cells_text(table, _BOLD_OPEN, _BOLD_CLOSE), headers=table.columns,
                    tablefmt="latex_booktabs", disable_numparse=True, colalign=table.align)
    for symbol, latex in _LATEX_LAYOUT_SYMBOLS.items():
        text = text.replace(symbol, latex)
    header = [f"% requires \\usepackage{{{','.join(table.packages)}}}"]
    if grid is not None:
        header.append(f"% grid: {grid} (generated by benchmark.report.tables from run records)")
    header += [f"% {n}" for n in table.notes]
    return "\n".join(header + [text]) + "\n"


def table_csv(table: Table) -> str:
    """Every column, display text and numbers (NaN as empty), one line per row."""
    return table.frame.to_csv(index=False, lineterminator="\n")


# --------------------------------------------------------------------------- files


def render(grid: str, cells: list[Cell], records: list[dict[str, Any]], out_dir: Path | str,
           reference_rows: list[dict[str, Any]] | None = None,
           layout: str | None = None) -> dict[str, Path]:
    """Write the grid's table (`<grid>.md|.tex|.csv`, in its layout) and the per-class IoU
    (`<grid>_per_class.md|.tex|.csv`) under out_dir; returns {format: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {"": grid_table(grid, cells, records, reference_rows, layout),
              "_per_class": per_class_table(cells, records)}
    paths = {}
    for suffix, table in tables.items():
        texts = {"md": table_markdown(table), "tex": table_latex(table, grid=grid),
                 "csv": table_csv(table)}
        for ext, text in texts.items():
            paths[f"{suffix.lstrip('_')}_{ext}".lstrip("_")] = write_text_atomic(
                out_dir / f"{grid}{suffix}.{ext}", text)
    return paths


def reference_rows_for(grid: str) -> list[dict[str, Any]]:
    """The paper's reference-only rows of a grid (`experiments.paper.REFERENCE_ROWS[grid]`),
    or none when the project has no such module or the grid no such rows."""
    if importlib.util.find_spec("experiments.paper") is None:
        return []
    from experiments.paper import REFERENCE_ROWS

    return check_reference_rows(REFERENCE_ROWS.get(grid))
