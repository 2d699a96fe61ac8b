"""`results/report_<grid>.md`: a grid's table, per-class IoU, figures and provenance in one file.

Everything in it is derived from the records and the files already written (tables, figures),
so it is regenerated, never edited, and identical for identical inputs (no generation time).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from tabulate import tabulate

from benchmark.config import Cell
from benchmark.report.aggregate import method_labels
from benchmark.report.render import table_markdown
from benchmark.report.tables import DASH, grid_table, per_class_table
from benchmark.provenance import is_uncommitted
from benchmark.store import Record, ResultsLayout, atomic_write

FIGURE_TITLES = {
    "per_class_iou": "Per-class IoU",
    "training_curves": "Training loss and evaluation mIoU",
    "similarity": "Pixel-prototype similarity (paper Fig. 3)",
    "embedding": "Embedding space, PCA (paper Fig. 5)",
    "prototype_health": "Prototype health per class",
    "mode_alignment": "Prototypes vs appearance modes (generated data)",
}


def _md(rows: list[list[Any]], headers: list[str], align: tuple[str, ...] | None = None) -> str:
    rows = [[str(v).replace("|", r"\|") for v in row] for row in rows]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=align)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3f}"


def _run_compute(rec: Record) -> Counter:
    """Seconds of one finished run: train, eval, and GPU-seconds (wall x processes) or CPU
    core-seconds (wall x torch threads x processes)."""
    train_s = float(rec.timings.train_s or 0.0)
    eval_s = float(rec.timings.eval_s or 0.0)
    procs = int(rec.world_size or 1)
    threads = int((rec.provenance.hardware or {}).get("torch_threads") or 1)
    out = Counter(train_s=train_s, eval_s=eval_s)
    if rec.memory.device == "cuda":
        out["gpu_s"] += (train_s + eval_s) * procs
    else:
        out["cpu_s"] += (train_s + eval_s) * procs * threads
    return out


def compute_rows(cells: list[Cell], records: list[Record]) -> list[list[str]]:
    """Per cell: runs done / failed, train and eval hours, GPU-hours (wall x GPUs) or CPU
    core-hours (wall x threads x processes), and the peak memory; plus a total row."""
    rows, totals = [], Counter()
    for cell, label in zip(cells, method_labels(cells)):
        mine = [r for r in records if r.cell_key == cell.key]
        done = [r for r in mine if r.status == "done"]
        c: Counter = Counter(done=len(done), failed=sum(r.status == "failed" for r in mine))
        for rec in done:
            c.update(_run_compute(rec))
        peak = max((int(r.memory.peak_bytes or 0) for r in done), default=0)
        totals.update(c)
        rows.append([label, cell.column, c["done"], c["failed"], _hours(c["train_s"]),
                     _hours(c["eval_s"]), _hours(c["gpu_s"]), _hours(c["cpu_s"]),
                     f"{peak / 2**30:.2f}" if peak else DASH])
    rows.append(["**total**", "", totals["done"], totals["failed"], _hours(totals["train_s"]),
                 _hours(totals["eval_s"]), _hours(totals["gpu_s"]), _hours(totals["cpu_s"]), ""])
    return rows


def _code_and_libraries(runs: list[Record]) -> list[str]:
    """Commits, then library versions (several versions of one library: runs per version)."""
    commits = Counter(r.provenance.git_commit or "unknown" for r in runs)
    out = ["### Code", "", _md(sorted(commits.items()), ["git commit", "runs"]), ""]
    dirty = [r for r in runs if is_uncommitted(r.provenance)]
    if dirty:
        kept = sum(bool(r.provenance.diff) for r in dirty)
        out += [f"**{len(dirty)} of {len(runs)} runs come from uncommitted code** (a `-dirty` "
                f"commit); {kept} of them stored their diff beside the record, and "
                f"`python -m benchmark.provenance rebuild RECORD DIR` rebuilds that code.", ""]
    libs: dict[str, Counter] = {}
    for r in runs:
        for name, version in (r.provenance.versions or {}).items():
            libs.setdefault(name, Counter())[version] += 1
    return out + ["### Libraries", "",
                  _md([[n, ", ".join(f"{v} ({k})" if len(cnt) > 1 else v
                                     for v, k in sorted(cnt.items()))]
                       for n, cnt in sorted(libs.items())], ["library", "version (runs)"]), ""]


def _hardware(runs: list[Record]) -> list[str]:
    """CPU, cores, GPUs and processes per run, with how many runs used each combination."""
    hardware = Counter()
    for r in runs:
        hw = r.provenance.hardware or {}
        gpu = f"{hw.get('gpu_count', 1)} x {hw['gpu']}" if hw.get("gpu") else DASH
        hardware[(hw.get("cpu") or "unknown", str(hw.get("cpu_count", "?")), gpu,
                  str(r.world_size or 1))] += 1
    return ["### Hardware", "",
            _md([[*k, n] for k, n in sorted(hardware.items())],
                ["CPU", "CPU cores", "GPUs", "processes per run", "runs"]), ""]


def _provenance(records: list[Record], cells: list[Cell]) -> list[str]:
    """Commits, library versions and hardware, each with how many runs used it."""
    keys = {c.key for c in cells}
    mine = [r for r in records if r.cell_key in keys and r.status in ("done", "failed")]
    if not mine:
        return ["No run has finished yet."]
    out = _code_and_libraries(mine) + _hardware(mine)
    started = sorted(r.started for r in mine if r.started)
    finished = sorted(r.finished for r in mine if r.finished)
    if started and finished:
        out += [f"Runs started {started[0]} and finished {finished[-1]} (UTC).", ""]
    return out


def _failures(cells: list[Cell], records: list[Record]) -> list[str]:
    """The error line of every failed run whose (cell, seed) has no finished record."""
    done = {(r.cell_key, r.seed) for r in records if r.status == "done"}
    rows = {c.key: c.row for c in cells}
    failed = [[rows[r.cell_key], r.cell_key, r.seed, r.error or "?"]
              for r in records if r.status == "failed" and r.cell_key in rows
              and (r.cell_key, r.seed) not in done]
    if not failed:
        return []
    return ["## Failed runs", "", _md(failed, ["Method", "cell key", "seed", "error"]), ""]


def _figure_order(stem: str, cells: list[Cell]) -> tuple[int, int, str, str]:
    """Sort key and title of a figure file: kind (FIGURE_TITLES order), then grid order; a
    figure of one run is titled with its method and seed instead of its cell key."""
    kinds = list(FIGURE_TITLES)
    kind = next((i for i, prefix in enumerate(kinds) if stem.startswith(prefix)), len(kinds))
    title = FIGURE_TITLES[kinds[kind]] if kind < len(kinds) else stem
    for i, (cell, label) in enumerate(zip(cells, method_labels(cells))):
        if f"_{cell.key}_seed" in stem:
            return kind, i, stem, f"{title}: {label}, seed {stem.rsplit('_seed', 1)[1]}"
    rest = stem[len(kinds[kind]):].strip("_") if kind < len(kinds) else ""
    return kind, -1, stem, f"{title} ({rest})" if rest else title


def _figures(results: ResultsLayout, grid: str, cells: list[Cell], report_dir: Path) -> list[str]:
    """A section per figure file of the grid (PNG shown, PDF linked), in `_figure_order`."""
    pngs = {png.stem: png for png in results.figures(grid).glob("*.png")}
    if not pngs:
        return ["No figures yet: `python run_all.py --grid " + grid + " --figures`.", ""]
    out = []
    for *_, stem, title in sorted(_figure_order(s, cells) for s in pngs):
        png = pngs[stem]
        rel = Path(os.path.relpath(png, report_dir)).as_posix()
        pdf = png.with_suffix(".pdf")
        pdf_rel = Path(os.path.relpath(pdf, report_dir)).as_posix()
        link = f" ([PDF]({pdf_rel}))" if pdf.exists() else ""
        out += [f"### {title}{link}", "", f"![{png.stem}]({rel})", ""]
    return out


def write_report(grid: str, cells: list[Cell], records: list[Record],
                 results: ResultsLayout, description: str = "",
                 reference_rows: Iterable[dict[str, Any]] | None = None,
                 layout: str = "paper") -> Path:
    """Write `<results>/report_<grid>.md` (table, per-class IoU, figures, provenance, compute)."""
    path = results.report(grid)
    lines = [f"# Report: grid `{grid}`", ""]
    if description:
        lines += [description, ""]
    lines += [f"Regenerate with `python run_all.py --grid {grid} --tables-only --figures`. "
              f"Tables as LaTeX and CSV: `tables/{grid}.tex`, `tables/{grid}.csv`.", "",
              "## Results", "", table_markdown(grid_table(cells, records, reference_rows, layout)),
              "## Per-class IoU", "", table_markdown(per_class_table(cells, records)),
              "## Figures", ""]
    lines += _figures(results, grid, cells, path.parent)
    lines += _failures(cells, records)
    lines += ["## Provenance", ""] + _provenance(records, cells)
    lines += ["## Compute per cell", "",
              "GPU-hours = (train + eval seconds) x processes on GPU runs; CPU core-hours = "
              "(train + eval seconds) x torch threads x processes on CPU runs.", "",
              _md(compute_rows(cells, records),
                  ["Method", "Backbone", "runs done", "failed", "train h", "eval h",
                   "GPU-hours", "CPU core-hours", "peak memory (GiB)"],
                  ("left", "left") + ("right",) * 7), ""]
    return atomic_write(path, "\n".join(lines).rstrip("\n") + "\n")
