"""Result tables: one row per grid cell, regenerated from run records (never edited by hand).

`summarize` turns cells + records into a DataFrame; `format_markdown` / `format_latex` render
its display columns as deterministic text; `render` writes `<grid>.md`, `<grid>.tex` and
`<grid>.csv` (all columns) atomically.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from benchmark.config import Cell

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


def _fmt(value: float | None, signed: bool = False) -> str:
    """One decimal (optionally with a sign), or the dash for a missing number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    value = round(value, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
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
        header.append(f"% grid: {grid} (generated by benchmark.tables from run records)")
    return "\n".join(header + [text]) + "\n"


def _write_atomic(path: Path, text: str) -> Path:
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


def render(grid: str, cells: list[Cell], records: list[dict[str, Any]],
           out_dir: Path | str) -> dict[str, Path]:
    """Write `<grid>.md`, `<grid>.tex` and `<grid>.csv` under out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = summarize(cells, records)
    texts = {
        "md": format_markdown(df),
        "tex": format_latex(df, grid=grid),
        "csv": df.to_csv(index=False, lineterminator="\n"),
    }
    return {ext: _write_atomic(out_dir / f"{grid}.{ext}", text) for ext, text in texts.items()}
