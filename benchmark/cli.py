"""Command line of run_all.py: plan, run, and tabulate grids.

Errors a user can fix (unknown grid, unknown `--set` key, bad value) print one line and exit 2.
Runs that fail write a failed record; the command goes on with the rest and exits 1 at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.config import Cell, ConfigError, apply_overrides, validate
from benchmark.launch import EXECUTORS, Run, execute_run, plan
from benchmark.store import load_records
from benchmark.tables import format_markdown, render, summarize
from experiments import Grid, get_grid, grid_names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="run_all.py", description="Reproduce the ProtoSeg paper's tables: plan, run, tabulate.",
    )
    p.add_argument("--grid", action="append", required=True,
                   help=f"grid to run (repeatable): {', '.join(grid_names())}")
    p.add_argument("--seeds", type=int, default=None,
                   help="number of seeds (0..N-1); default: the grid's own")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of every cell, e.g. train.iters=2000 (repeatable)")
    p.add_argument("--data-root", default=None, help="data-set folder (same as --set data.root=DIR)")
    p.add_argument("--results", default="results", help="results folder (records and tables)")
    p.add_argument("--executor", default="inline", help=f"where runs execute: {', '.join(EXECUTORS)}")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--tables-only", action="store_true", help="only regenerate tables from records")
    p.add_argument("--force", action="store_true", help="rerun runs that already have a record")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p.parse_args(argv)


def load_grid(name: str, overrides: list[str]) -> tuple[Grid, list[Cell]]:
    """The grid with overrides applied to every cell (validated)."""
    grid = get_grid(name)
    return grid, [apply_overrides(c, overrides) if overrides else validate(c) for c in grid.cells]


def print_plan(grid: Grid, runs: list[Run]) -> None:
    print(f"grid {grid.name}: {grid.description}")
    by_cell: dict[str, list[Run]] = {}
    for r in runs:
        by_cell.setdefault(r.cell.key, []).append(r)
    for key, cell_runs in by_cell.items():
        c = cell_runs[0].cell
        done = sum(r.done for r in cell_runs)
        t = c.train
        print(f"  {c.row:<22} {c.column:<12} {key}  seeds {len(cell_runs)} (done {done})  "
              f"{c.data.name} | {c.model.backbone}+{c.model.decoder}+{c.model.head.name} | "
              f"{t.iters} it x {t.batch_size} img, {t.optimizer} lr {t.lr:g}")


def write_tables(grid: Grid, cells: list[Cell], results: Path) -> str:
    """Regenerate md/tex/csv from the grid's records; returns the Markdown text."""
    records = load_records(results, grid.name)
    paths = render(grid.name, cells, records, results / "tables")
    print(f"tables: {', '.join(str(p) for p in paths.values())}")
    return format_markdown(summarize(cells, records))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Path(args.results)
    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    try:
        if args.executor not in EXECUTORS:
            raise ConfigError(f"unknown executor {args.executor!r}; choose one of {', '.join(EXECUTORS)}")
        if args.seeds is not None and args.seeds < 1:
            raise ConfigError("--seeds must be >= 1")
        grids = [load_grid(name, overrides) for name in args.grid]
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    failures = 0
    for grid, cells in grids:
        seeds = list(range(args.seeds if args.seeds is not None else grid.seeds))
        runs = plan(cells, seeds, results)
        if args.dry_run:
            print_plan(grid, runs)
            continue
        if not args.tables_only:
            pending = [r for r in runs if args.force or not r.done]
            print(f"grid {grid.name}: {len(runs)} runs, {len(runs) - len(pending)} done, "
                  f"{len(pending)} to run")
            for i, run in enumerate(pending, 1):
                print(f"[{i}/{len(pending)}] {run.cell.row} seed {run.seed}")
                try:
                    record = execute_run(run, progress=not args.no_progress)
                except Exception as err:  # noqa: BLE001 - recorded as failed; continue the grid
                    failures += 1
                    print(f"  failed: {type(err).__name__}: {err}".splitlines()[0], file=sys.stderr)
                    continue
                m = record["metrics"]
                print(f"  mIoU {m['miou']:.1f}  aAcc {m['aacc']:.1f}  "
                      f"train {record['timings']['train_s']:.0f}s  -> {run.path}")
        print(write_tables(grid, cells, results))
    if failures:
        print(f"error: {failures} run(s) failed; their records hold the error", file=sys.stderr)
        return 1
    return 0
