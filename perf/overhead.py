"""Figure 5: the suite's own overhead: planning every grid and regenerating tables.

1. `run_all.py --grid <grid> --dry-run` for every grid, each in a fresh interpreter (start-up
   and imports are part of what a user waits for), against an empty results folder. The plan
   prints each cell's parameter count and estimated GPU memory, computed by a meta-device
   forward of the model that is cached on disk (benchmark/preflight.py); "warm" runs find the
   cache filled (the usual case: every dry run after the first), the "cold" run starts from an
   empty cache and builds every model once. Target: warm < 2 s. A warm dry run imports neither
   torch nor numpy (names and recipes come from benchmark/catalog.py); `python -c "import
   torch"` is shown for scale: what every dry run paid before.
2. Table regeneration from 10,000 records: records in the store's format (one JSON file per
   run, as `benchmark.launch.runs.execute_run` writes them) are generated for the `smoke` grid in a
   temporary folder, then what `run_all.py --tables-only` does is timed in-process (read the
   records, write the grid's table and per-class table as Markdown/LaTeX/CSV, write the
   report). Target: < 2 s. Tables read the records' summaries (store.load_summaries: records
   without history and confusion, cached beside them and re-parsed only when a file changes);
   "cold" is the first regeneration, which parses every record and fills that cache. The whole
   `--tables-only` command (fresh interpreter) is shown too.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from perf.common import Report, Table, standalone, verdict

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 2.0
RECORDS = 10_000


# ----------------------------------------------------------------------------- records


def synthetic_record(cell: Any, seed: int, class_names: list[str], rng: random.Random,
                     failed: bool = False) -> dict[str, Any]:
    """One run record as `execute_run` writes it, with made-up but well-formed numbers."""
    base = {
        "schema": 1, "grid": cell.grid, "cell_key": cell.key, "seed": seed,
        "cell": cell.to_dict(), "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-01T00:05:00+00:00",
        "git_commit": "0" * 40, "world_size": 1,
        "versions": {"python": "3.11.7", "torch": "2.14.1", "timm": "1.0.31"},
        "hardware": {"cpu": "generated", "cpu_count": 2, "gpu": None, "machine": "x86_64",
                     "host": "generated", "torch_threads": 2},
    }
    if failed:
        base.update(status="failed", error="NonFiniteLossError: loss became nan at step 7",
                    traceback="Traceback (most recent call last): ...")
        return base
    c = len(class_names)
    confusion = [[rng.randrange(0, 1000) if i != j else rng.randrange(5000, 50000)
                  for j in range(c)] for i in range(c)]
    ious = {}
    for k, name in enumerate(class_names):
        tp = confusion[k][k]
        union = sum(confusion[k]) + sum(row[k] for row in confusion) - tp
        ious[name] = 100.0 * tp / union
    iters, every = cell.train.iters, cell.train.log_every
    history = [{"step": s, "loss": 2.0 / (1 + s / 50), "ce": 1.9 / (1 + s / 50), "lr": 1e-3}
               for s in range(0, iters, every)]
    total = sum(map(sum, confusion))
    base.update(
        status="done", error=None,
        metrics={"miou": statistics.fmean(ious.values()),
                 "aacc": 100.0 * sum(confusion[k][k] for k in range(c)) / total,
                 "per_class_iou": ious, "pixels": total},
        params={"learnable": 3_452_651, "total": 3_452_651},
        timings={"train_s": 100 + rng.random(), "eval_s": 5 + rng.random(),
                 "step_s_median": 0.1, "train_img_per_s": 20.0, "eval_img_per_s": 12.0,
                 "resumed_from_step": 0},
        memory={"device": "cpu", "peak_bytes": 1_300_000_000,
                "note": "peak resident memory of the whole process (CPU)"},
        history=history, confusion=confusion, weights_sha256="0" * 64,
    )
    return base


def generate_records(root: Path, grid: str = "smoke", n: int = RECORDS, seed: int = 0,
                     failed_every: int = 100) -> tuple[Any, int]:
    """Write `n` records of `grid` under `root` (`runs/<grid>/<key>/seed<k>.json`), spread
    over its cells (seeds 0, 1, ...), one in `failed_every` a failed run. Returns (grid, n)."""
    from benchmark.datasets import dataset_info
    from benchmark.store import ResultsLayout
    from experiments import get_grid

    g = get_grid(grid)
    names = {c.key: dataset_info(c.data).class_names for c in g.cells}
    rng = random.Random(seed)
    for i in range(n):
        cell = g.cells[i % len(g.cells)]
        run_seed = i // len(g.cells)
        record = synthetic_record(cell, run_seed, names[cell.key], rng,
                                  failed=failed_every > 0 and i % failed_every == failed_every - 1)
        path = ResultsLayout(root).record(grid, cell.key, run_seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return g, n


def regenerate_tables(grid: Any, root: Path) -> None:
    """What `run_all.py --tables-only` does for one grid (benchmark.cli.write_tables)."""
    import contextlib
    import io

    from benchmark.cli import write_tables
    from benchmark.store import ResultsLayout

    with contextlib.redirect_stdout(io.StringIO()):
        write_tables(grid, list(grid.cells), ResultsLayout(root))


# ----------------------------------------------------------------------------- commands


def command_seconds(args: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one command in a fresh interpreter, run from the repository root."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return seconds


def median_seconds(args: list[str], repeats: int, env: dict[str, str] | None = None) -> float:
    return statistics.median(command_seconds(args, env) for _ in range(repeats))


def run(quick: bool = False, device: Any = None) -> Report:
    """Suite overhead: dry run of every grid, table regeneration from 10,000 records."""
    from experiments import grid_names

    grids = ["smoke"] if quick else grid_names()
    repeats = 1 if quick else 3
    rows = []
    with tempfile.TemporaryDirectory(prefix="protoseg-overhead-") as tmp:
        tmp_path = Path(tmp)
        env = {"PROTOSEG_CACHE": str(tmp_path / "cache")}
        results = str(tmp_path / "results")
        floor = median_seconds(["-c", "import torch"], repeats)
        rows.append(["`python -c \"import torch\"` (for scale)", "–", f"{floor:.2f}", "–", "–",
                     "–"])
        for grid in grids:
            args = ["run_all.py", "--grid", grid, "--dry-run", "--results", results]
            cold = command_seconds(args, env)
            warm = median_seconds(args, repeats, env)
            rows.append([f"`run_all.py --grid {grid} --dry-run`", f"{cold:.2f}", f"{warm:.2f}",
                         f"< {TARGET_S:.0f}", verdict(warm, TARGET_S), ""])
        n = 200 if quick else RECORDS
        root = tmp_path / "tables"
        t0 = time.perf_counter()
        grid, _ = generate_records(root, "smoke", n)
        generated = time.perf_counter() - t0
        importlib.import_module("benchmark.report.tables")  # pandas: its import is not the figure

        t0 = time.perf_counter()
        regenerate_tables(grid, root)  # parses every record, fills the summary cache
        cold = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            regenerate_tables(grid, root)
            times.append(time.perf_counter() - t0)
        in_process = statistics.median(times)
        command = median_seconds(["run_all.py", "--grid", "smoke", "--tables-only", "--results",
                                  str(root)], repeats)
        rows.append([f"tables + report from {n:,} records (in-process)", f"{cold:.2f}",
                     f"{in_process:.2f}", f"< {TARGET_S:.0f}", verdict(in_process, TARGET_S), ""])
        rows.append([f"`run_all.py --grid smoke --tables-only` ({n:,} records)", "–",
                     f"{command:.2f}", "report only", "–", ""])
    headers = ["Command", "Cold (s)", "Warm (s)", "Target", "Verdict", ""]
    rows = [r[:5] for r in rows]
    notes = [f"warm = median of {repeats} runs with the memory-estimate cache filled; cold = "
             "one run with an empty cache (PROTOSEG_CACHE=<empty folder>): builds every "
             "distinct model of the grid once on the meta device",
             f"records: {n:,} generated `smoke` records (one JSON file each, "
             f"{n // 100} failed) written in {generated:.1f} s; in-process = "
             "benchmark.cli.write_tables (read all records, tables as md/tex/csv, per-class "
             "table, report); cold = the first call (parses every record, fills the summary "
             f"cache), warm = median of {repeats} later calls; the command adds interpreter "
             "start-up and imports (pandas, scipy)",
             "every dry run and the table command run in a fresh interpreter against an empty "
             "temporary results folder",
             f"`import torch` alone takes {floor:.2f} s here: a warm dry run imports neither "
             "torch, numpy nor the model libraries (tests/perf/test_perf.py checks it)"]
    return Report("overhead", "5. Suite overhead: dry runs and table regeneration",
                  [Table(headers[:5], rows)], notes)


if __name__ == "__main__":
    raise SystemExit(standalone("overhead", run))
