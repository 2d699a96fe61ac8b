"""Command line of run_all.py: plan, run, and tabulate grids.

Errors a user can fix (unknown grid, unknown `--set` key, bad value) print one line and exit 2.
Runs that fail write a failed record; the command goes on with the rest and exits 1 at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from typing import Callable, Iterator

from benchmark.config import Cell, ConfigError, HeadSpec
from benchmark.overrides import apply_to_grid, relabel
from benchmark.migrate import migrate_grid
from benchmark.ranges import check_flags
from benchmark.validation import validate
from methods.registry import PLUGINS_ENV, RegistryError, import_plugins
from benchmark.launch import locks
from benchmark.launch.executors import EXECUTORS, Outcome, SubmissionError
from benchmark.launch.runs import Run, plan
from benchmark.launch.status import run_status, with_running
from benchmark.cpu_memory import ask_for_huge_pages
from benchmark.store import (ResultsLayout, forget_reported, load_records,
                             load_summaries)
from benchmark.disk import DiskFull
from benchmark.stops import Interrupted
from experiments import Grid, get_grid, grid_names

GridCells = list[tuple[Grid, list[Cell]]]

# benchmark.report.render / benchmark.report.markdown (pandas) are imported where tables are
# written, so that `--dry-run` and `--status` start fast.


def seeds_flag(text: str) -> int | str:
    """`--seeds`: a number of seeds, or `auto` (benchmark/launch/waves.py)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor auto") from None


def add_seed_flags(p: argparse.ArgumentParser) -> None:
    """--seeds N|auto, and what seed planning and the sequential study assume."""
    p.add_argument("--seeds", type=seeds_flag, default=None, metavar="N|auto",
                   help="number of seeds (0..N-1); default: the grid's own; auto: seeds in "
                        "waves (3, 5, 8, ...), each pair stopping when its verdict is decided "
                        "(group-sequential, overall 5%%; docs/verdicts.md)")
    p.add_argument("--spending", choices=("obf", "pocock"), default="obf",
                   help="--seeds auto: alpha-spending shape, O'Brien-Fleming (default: "
                        "looks early only at large effects) or Pocock")
    p.add_argument("--sigma", type=float, default=None, metavar="MIOU",
                   help="seed-to-seed sd of one run for the dry run's seed plan "
                        "(default: measured from the grid's records, else 0.5)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="run_all.py", description="Reproduce the ProtoSeg paper's tables: plan, run, tabulate.",
    )
    p.add_argument("--grid", action="append", required=True,
                   help=f"grid to run (repeatable): {', '.join(grid_names())}")
    add_seed_flags(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of every cell, e.g. train.iters=2000 (repeatable); "
                        "a head option (model.head.*) changes only the cells whose head has it")
    p.add_argument("--ours", default=None, metavar="HEAD",
                   help="put this registered head in place of the prototype head in every "
                        "'ours' cell (baselines unchanged); its options via --set model.head.*")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import a module that registers heads, backbones, decoders, data sets "
                        "or grids (repeatable; also $PROTOSEG_PLUGINS; installed packages "
                        "register through entry points without it)")
    p.add_argument("--data-root", default=None,
                   help="folder holding the data sets (camvid/, ADEChallengeData2016/, "
                        "cityscapes/, coco_stuff10k/) or one data set's own folder; same as "
                        "--set data.root=DIR, not part of the cell key; default $PROTOSEG_DATA")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="results folder (records, checkpoints, tables, reports); default results")
    p.add_argument("--executor", default="inline", help=f"where runs execute: {', '.join(EXECUTORS)}")
    p.add_argument("--checkpoint", default=None, metavar="FILE_OR_DIR",
                   help="evaluate each cell from a published whole-model checkpoint (MMSeg "
                        "model zoo or the released ProtoSeg; a folder is searched for each "
                        "cell's file) instead of training; --grid zoo always does, default "
                        "folder $PROTOSEG_CHECKPOINTS or ./checkpoints")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--preflight", action="store_true",
                   help="build every cell's model, run one training step and one evaluation "
                        "forward at the recipe's crop on random images, print params vs the "
                        "paper, step time and peak memory (CPU or GPU); trains nothing")
    p.add_argument("--tables-only", action="store_true",
                   help="only regenerate tables and results/report_<grid>.md from records")
    p.add_argument("--figures", action="store_true",
                   help="also draw figures into results/figures/<grid>/ (PNG + PDF); the "
                        "embedding figures need the runs' final weights")
    p.add_argument("--force", action="store_true", help="rerun runs that already have a record")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--status", action="store_true",
                   help="per-run state: done / running / pending / failed (with the error)")
    cluster = p.add_argument_group("cluster (--executor local|slurm)")
    cluster.add_argument("--max-parallel", type=int, default=None,
                         help="runs at once (slurm_array_parallelism; local: 1)")
    cluster.add_argument("--partition", default=None)
    cluster.add_argument("--gpus-per-run", type=int, default=None,
                         help="GPUs per run, on one node (one process each); default: the recipe's")
    cluster.add_argument("--timeout-min", type=int, default=None)
    cluster.add_argument("--account", default=None)
    cluster.add_argument("--qos", default=None)
    cluster.add_argument("--constraint", default=None)
    cluster.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                         help="shell line run before the job (repeatable), e.g. 'module load cuda'")
    cluster.add_argument("--wait", action="store_true", help="slurm: wait for the jobs to finish")
    return p.parse_args(argv)


def load_grid(name: str, overrides: list[str], ours: str | None = None
              ) -> tuple[Grid, list[Cell], list[str]]:
    """The grid with `--ours` and the overrides applied (validated), and one line per head
    option saying how many cells it changed."""
    grid = get_grid(name)
    cells = list(grid.cells)
    if ours is not None:
        cells = with_our_head(grid, cells, ours)
    if not overrides:
        return grid, [validate(c) for c in cells], []
    cells, notes = apply_to_grid(cells, overrides)
    return grid, cells, notes


def with_our_head(grid: Grid, cells: list[Cell], head: str) -> list[Cell]:
    """`--ours HEAD`: every "ours" cell takes the registered head (its defaults), labelled with
    its display name; baseline cells stay as they are, byte for byte."""
    if not any(c.tag == "ours" for c in cells):
        raise ConfigError(f"--ours: grid {grid.name} has no 'ours' cells to put {head} in")
    spec = HeadSpec(head)
    return [relabel(c, replace(c, model=replace(c.model, head=spec))) if c.tag == "ours" else c
            for c in cells]


def preflight_grid(grid: Grid, cells: list[Cell]) -> bool:
    """Print the preflight table of a grid; True when every cell passed."""
    from benchmark.launch.preflight import format_preflight, preflight_ok, run_preflight

    print(f"grid {grid.name}: preflight of {len(cells)} cells")
    results = run_preflight(cells)
    print(format_preflight(results))
    return preflight_ok(results)


def write_tables(grid: Grid, cells: list[Cell], results: ResultsLayout,
                 figures: bool = False) -> str:
    """Regenerate md/tex/csv (and figures) from the grid's records, then the report; returns
    the Markdown table."""
    from benchmark.report.markdown import write_report
    from benchmark.report.render import render

    # figures draw the per-step history; tables need only the records' summaries (fast)
    from benchmark.looks import load_history, paired_counts, record_looks
    from benchmark.report.verdicts import look_history

    records = (load_records if figures else load_summaries)(results, grid.name)
    refs, table_layout = grid.reference_rows, grid.layout
    record_looks(results, grid.name, paired_counts(cells, records))  # repeated looks, said
    with look_history(load_history(results, grid.name)):
        paths = render(grid.name, cells, records, results.tables(), refs, table_layout)
    print(f"tables: {', '.join(str(p) for p in paths.values())}")
    if figures:
        from benchmark.report.figures import render_figures  # matplotlib only for figures

        drawn = render_figures(grid.name, cells, records, results)
        print(f"figures: {len(drawn)} files in {results.figures(grid.name)}")
    with look_history(load_history(results, grid.name)):
        report = write_report(grid.name, cells, records, results, grid.description, refs,
                              table_layout)
    print(f"report: {report}")
    return paths["md"].read_text(encoding="utf-8")


INTERRUPTED = 3  # exit code: a run stopped on a signal after saving its checkpoint


def print_status(grid: Grid, runs: list[Run]) -> None:
    print(f"grid {grid.name}:")
    for r in with_running(runs, run_status(runs)):
        job = f"job {r['job']}" if r["job"] else ""
        print(f"  {r['row']:<22} seed {r['seed']:<3} {r['state']:<14} {job:<14} {r['detail']}")


def grid_runs(grid: Grid, cells: list[Cell], args: argparse.Namespace,
              results: ResultsLayout, save: bool = False) -> list[Run]:
    """The grid's runs: every cell times `--seeds` (default: the grid's own number); under
    `--seeds auto` each cell's seeds so far (benchmark/launch/waves.py: `save` takes the looks
    the records allow, says them, and keeps the sequential state)."""
    if args.seeds == "auto":
        from benchmark.launch.waves import plan_waves

        wave = plan_waves(grid.name, cells, results, load_summaries(results, grid.name),
                          args.sigma, args.spending, save=save)
        if save and wave.lines:
            print("\n".join(wave.lines))
        return [run for c in cells for run in plan([c], list(range(wave.targets[c.key])), results)]
    return plan(cells, list(range(args.seeds if args.seeds is not None else grid.seeds)), results)


def data_problem(grids: GridCells, args: argparse.Namespace, results: ResultsLayout) -> str | None:
    """The checks before any compute (benchmark/launch/checks.py: folders writable with room
    for a record and a checkpoint, pretrained files, data layout, first evaluation pairs) of
    every pending run and the tables folder; the first problem as one line, or None."""
    from benchmark.launch.checks import first_problem

    return first_problem([run for grid, cells in grids for run in
                          grid_runs(grid, cells, args, results) if args.force or not run.done],
                         results)


def pending_runs(grid: Grid, cells: list[Cell], args: argparse.Namespace,
                 results: ResultsLayout) -> list[Run]:
    """The runs still to make (all with --force, whose checkpoints are then dropped)."""
    runs = grid_runs(grid, cells, args, results, save=True)
    pending = [r for r in runs if args.force or not r.done]
    print(f"grid {grid.name}: {len(runs)} runs, {len(runs) - len(pending)} done, "
          f"{len(pending)} to run")
    if args.force:
        for run in pending:
            if locks.holder(run.lock_path) is None:  # never another process's checkpoints
                run.clear_checkpoints()
    return pending


def waves(grid: Grid, cells: list[Cell], args: argparse.Namespace,
          results: ResultsLayout) -> Iterator[list[Run]]:
    """The pending runs once; under `--seeds auto` wave after wave while each wave ends done
    (a run left undone, failed or held by another process, ends the loop: its record or
    --status says why, and the same command continues)."""
    pending = pending_runs(grid, cells, args, results)
    yield pending
    while args.seeds == "auto" and pending and all(r.done for r in pending):
        pending = pending_runs(grid, cells, args, results)
        if not pending:
            return
        yield pending


# --------------------------------------------------------------------------- one function per mode


def dry_run(args: argparse.Namespace, results: ResultsLayout, grids: GridCells) -> int:
    """Print the plan of every grid; trains and writes nothing."""
    from benchmark.launch.dry_run import describe_plan
    from benchmark.launch.seeds import seed_plan
    from benchmark.store import load_summaries
    from experiments.recipes import RECIPES

    for grid, cells in grids:
        if args.checkpoint or grid.name == "zoo":  # evaluated, not trained: no seeds, no recipe
            from benchmark.launch.dry_run import describe_checkpoints
            from experiments.zoo import published_for

            print(describe_checkpoints(grid, cells, args.checkpoint, published_for))
            continue
        runs = grid_runs(grid, cells, args, results)
        print(describe_plan(grid, runs, RECIPES, getattr(args, "gpus_per_run", None)))
        if args.executor in ("local", "slurm"):  # the job arrays it would submit
            from benchmark.launch.dry_run import describe_jobs

            print(describe_jobs(EXECUTORS[args.executor].from_args(args), runs))
        records = load_summaries(results, grid.name)
        fixed = args.seeds if isinstance(args.seeds, int) else grid.seeds
        print("\n".join(seed_plan(cells, records, fixed, args.sigma)))
        if args.seeds == "auto":
            from benchmark.launch.waves import sequential_plan

            print("\n".join(sequential_plan(grid.name, cells, results, records, args.sigma,
                                            args.spending)))
    return 0


def preflight(args: argparse.Namespace, results: ResultsLayout, grids: GridCells) -> int:
    """One training step and one evaluation forward per cell on random images."""
    failures = sum(not preflight_grid(grid, cells) for grid, cells in grids)
    if failures:
        print(f"error: preflight failed in {failures} grid(s); see the Status column",
              file=sys.stderr)
        return 1
    return 0


def status(args: argparse.Namespace, results: ResultsLayout, grids: GridCells) -> int:
    """Per-run state from records and the job log; a grid with a `--seeds auto` study shows
    the study's runs unless `--seeds` says otherwise."""
    for grid, cells in grids:
        grid_args = args
        if args.seeds is None and results.sequential(grid.name).exists():
            grid_args = argparse.Namespace(**{**vars(args), "seeds": "auto"})
            print(f"grid {grid.name}: the runs of its --seeds auto study "
                  f"({results.sequential(grid.name)})")
        print_status(grid, grid_runs(grid, cells, grid_args, results))
    return 0


def tables_only(args: argparse.Namespace, results: ResultsLayout, grids: GridCells) -> int:
    """Regenerate tables, figures and reports from the records; trains nothing."""
    for grid, cells in grids:
        if not write_outputs(grid, cells, args, results):
            return 1
    return 0


def run_grids(args: argparse.Namespace, results: ResultsLayout, grids: GridCells) -> int:
    """Make every pending run where `--executor` says (wave after wave under `--seeds auto`),
    then the tables of each grid whose runs have all ended."""
    executor = EXECUTORS[args.executor].from_args(args)
    failures = 0
    for grid, cells in grids:
        outcome = Outcome(0)
        try:
            for wave in waves(grid, cells, args, results):
                outcome = executor.run(wave)
                failures += outcome.failures
                if not outcome.ended:
                    break  # queued jobs: the same command, run again, takes the next look
        except Interrupted:
            return INTERRUPTED
        if not outcome.ended:
            print(f"follow with: python run_all.py --grid {grid.name} --status")
            continue
        if not write_outputs(grid, cells, args, results):
            return 1
    return finish(failures)


def write_outputs(grid: Grid, cells: list[Cell], args: argparse.Namespace,
                  results: ResultsLayout) -> bool:
    """Print the grid's table after writing every output; False (one line said) when the
    results folder cannot be written."""
    try:
        print(write_tables(grid, cells, results, figures=args.figures))
    except DiskFull:
        raise
    except OSError as err:
        print(f"error: {err}; make the results folder writable or pass --results DIR",
              file=sys.stderr)
        return False
    return True


def finish(failures: int) -> int:
    if failures:
        print(f"error: {failures} run(s) failed; the lines above and --status say why",
              file=sys.stderr)
        return 1
    return 0


Mode = Callable[[argparse.Namespace, ResultsLayout, GridCells], int]


def choose_mode(args: argparse.Namespace, grids: GridCells) -> Mode:
    """The function that serves the flags (the first of dry run, preflight, status, tables;
    else published checkpoints are evaluated, or runs made here or submitted)."""
    for flag, mode in (("dry_run", dry_run), ("preflight", preflight), ("status", status),
                       ("tables_only", tables_only)):
        if getattr(args, flag):
            return mode
    if args.checkpoint or any(grid.name == "zoo" for grid, _ in grids):
        return evaluate_published
    return run_grids


def ready_to_compute(mode: Mode, args: argparse.Namespace, results: ResultsLayout,
                     grids: GridCells) -> bool:
    """The checks before a mode that computes: backbone weights (preflight and runs), then
    folders, files and data of every pending run; False after one line per problem."""
    if mode in (run_grids, preflight) and weights_refused(grids):
        return False
    if mode is run_grids:
        problem = data_problem(grids, args, results)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return False
    return True


def load_grids(args: argparse.Namespace) -> GridCells:
    """Every requested grid with its cells (overrides applied); ConfigError on bad input."""
    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {args.executor!r}; "
                          f"choose one of {', '.join(EXECUTORS)}")
    check_flags(args)  # numeric flags in range, an explicit --checkpoint exists
    if args.seeds == "auto" and args.force:
        raise ConfigError("--force with --seeds auto would rerun seeds the sequential study "
                          "has already looked at; delete the grid's records and "
                          "results/sequential/<grid>.json to start over")
    grids = []
    for name in args.grid:
        grid, cells, notes = load_grid(name, overrides, args.ours)
        for note in notes:
            print(f"grid {grid.name}: {note}")
        if not (getattr(args, "status", False) or getattr(args, "tables_only", False)):
            check_job_shapes(cells, args)  # only where runs are planned or made
        grids.append((grid, cells))
    return grids


def check_job_shapes(cells: list[Cell], args: argparse.Namespace) -> None:
    """Jobs that would fail or collide once started; ConfigError: a global batch that does not
    split over --gpus-per-run, parallel local jobs with GPUs (all get the first GPUs)."""
    gpus_per_run = getattr(args, "gpus_per_run", None)
    for cell in cells:
        if gpus_per_run and cell.train.batch_size % gpus_per_run:
            raise ConfigError(
                f"--gpus-per-run {gpus_per_run}: {cell.row} ({cell.grid}) has train.batch_size "
                f"{cell.train.batch_size}, which does not split over {gpus_per_run} GPUs; give "
                f"a divisor of it, or --set train.batch_size=<a multiple of {gpus_per_run}>")
        gpus = cell.resources.gpus if gpus_per_run is None else gpus_per_run
        parallel = getattr(args, "max_parallel", None) or 1
        if args.executor == "local" and gpus and parallel > 1:
            raise ConfigError(
                f"--executor local --max-parallel {parallel}: {cell.row} ({cell.grid}) takes "
                f"{gpus} GPU(s) and local jobs all get this machine's first GPUs, so parallel "
                f"jobs would share them; use --max-parallel 1, or --executor slurm")


def use_plugins(modules: list[str]) -> None:
    """Import `--plugin` modules here and hand them to every worker ($PROTOSEG_PLUGINS is
    inherited by local and SLURM jobs); a module that cannot be imported is a ConfigError."""
    try:
        import_plugins(modules)
    except RegistryError as err:
        raise ConfigError(str(err)) from None
    if modules:
        known = [m for m in os.environ.get(PLUGINS_ENV, "").split(",") if m]
        os.environ[PLUGINS_ENV] = ",".join(dict.fromkeys([*known, *modules]))


def migrate_keys(results: ResultsLayout, grids: GridCells) -> None:
    """Move records stored under an older cell key to today's key (once; benchmark/migrate.py)."""
    for grid, _ in grids:
        try:
            moved = migrate_grid(results, grid.name)
        except OSError as err:
            print(f"warning: cannot move {grid.name}'s records to today's cell keys: {err}",
                  file=sys.stderr)
            continue
        if moved:
            print(f"grid {grid.name}: {len(moved)} cell folder(s) moved to today's cell keys "
                  f"(results unchanged), e.g. {moved[0][0]} -> {moved[0][1]}")


def evaluate_published(args: argparse.Namespace, results, grids) -> int:
    """`--checkpoint` and the zoo grid: evaluate published checkpoints instead of training
    (benchmark/launch/published.py); missing files are table rows, not errors."""
    from benchmark.launch.published import run_published
    from experiments.zoo import published_for

    from benchmark.launch.runs import save_record

    code = run_published(grids, args.checkpoint, results, published_for,
                         progress=not args.no_progress, save=save_record)
    for grid, cells in grids:
        print(write_tables(grid, cells, results))
    return code


def weights_refused(grids: GridCells) -> bool:
    """Paper cells without backbone weights (benchmark/checkpoints/weights.py): one line per
    backbone naming the file, its origin and `--set model.pretrained=...`; True = refuse."""
    from benchmark.checkpoints.weights import missing_weights

    lines = missing_weights(cell for _, cells in grids for cell in cells)
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return bool(lines)


def start_command() -> None:
    """Per command: huge pages asked of torch before its first tensor (child processes
    inherit the setting: benchmark/cpu_memory.py); one warning per damaged record."""
    ask_for_huge_pages()
    forget_reported()


def main(argv: list[str] | None = None) -> int:
    start_command()
    args = parse_args(argv)
    results = ResultsLayout(args.results)
    try:
        use_plugins(args.plugin)
        grids = load_grids(args)
    except (ConfigError, RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    migrate_keys(results, grids)
    mode = choose_mode(args, grids)
    if not ready_to_compute(mode, args, results, grids):
        return 2
    try:
        return mode(args, results, grids)
    except (DiskFull, SubmissionError) as err:  # a full disk at any write (no further run on
        print(f"error: {err}", file=sys.stderr)  # it), or the cluster refused a job array
        return 2 if isinstance(err, SubmissionError) else 1
