"""The `--dry-run` text: what a command would run, and what already exists, without importing
torch (parameter counts and memory come from benchmark/launch/memory.py's cached estimates)."""

from __future__ import annotations

import json
from typing import Any, Callable

from benchmark.config import Cell
from benchmark.launch.memory import crop_size, estimate_memory
from benchmark.launch.runs import DAMAGED, NONE, Run
from experiments import Grid
from experiments.recipes import Recipe

_SHOWN = {NONE: "-", DAMAGED: "damaged (rerun)"}  # a run's state as the plan lists it


def describe_plan(grid: Grid, runs: list[Run], recipes: dict[str, Recipe] | None = None,
                  gpus_per_run: int | None = None) -> str:
    """The `--dry-run` text: per cell its key, seeds and which records exist, model, parameter
    count beside the paper's, estimated GPU memory class (at the images per GPU of the
    recipe's GPUs, or of `--gpus-per-run`); then each recipe in full."""
    from benchmark.checkpoints.weights import weights_column  # torch only for existing files

    lines = [f"grid {grid.name}: {grid.description}"]
    by_cell: dict[str, list[Run]] = {}
    for r in runs:
        by_cell.setdefault(r.cell.key, []).append(r)
    used: dict[str, Recipe] = {}
    for key, cell_runs in by_cell.items():
        c = cell_runs[0].cell
        states = [r.state for r in cell_runs]
        done = [s for s in states if s.done]
        seeds = ", ".join(f"seed{r.seed} {_SHOWN.get(s.state, s.state)}"
                          for r, s in zip(cell_runs, states))
        m = c.model
        try:
            est = estimate_memory(c, gpus=gpus_per_run) if gpus_per_run else estimate_memory(c)
            params = (f"{est.params['learnable'] / 1e6:.2f}M learnable, "
                      f"{est.params['total'] / 1e6:.2f}M all")
            memory = f"~{est.gb:.1f} GB/GPU at {est.batch} img/GPU ({est.memory_class})"
        except Exception as err:  # noqa: BLE001 - an estimate must not stop the plan
            params, memory = "?", f"no estimate ({type(err).__name__})"
        paper = f" (paper {c.paper_params_m:g}M)" if c.paper_params_m is not None else ""
        recipe = (recipes or {}).get(c.train.recipe)
        if recipe is not None:
            used[recipe.name] = recipe
            schedule = f"recipe {recipe.name}"
        else:
            t = c.train
            schedule = f"{t.iters} it x {t.batch_size} img, {t.optimizer} lr {t.lr:g}"
        h, w = crop_size(c)
        lines += [
            f"  {c.row:<22} {c.column:<12} {key}  seeds {len(cell_runs)} (done {len(done)})",
            f"      {c.data.name} ({c.data.num_classes} classes) | {m.backbone}+{m.decoder}"
            f"+{m.head.name}" + (f"+aux {m.aux_weight:g}" if m.aux_weight else "")
            + f" | params {params}{paper} | {schedule}, crop {h}x{w}",
            f"      memory {memory} | records: {seeds}",
            f"      weights {weights_column(c)}",
        ]
    for recipe in used.values():
        lines += [f"recipe {recipe.describe()}",
                  f"    for: {recipe.summary}",
                  f"    augmentation: {recipe.augmentation}",
                  f"    evaluation: {recipe.eval_protocol}",
                  f"    source: {recipe.source}"]
        if recipe.deviations:
            lines.append(f"    deviations: {recipe.deviations}")
    return "\n".join(lines)


def describe_checkpoints(grid: Grid, cells: list[Cell], checkpoint: str | None,
                         lookup: Callable[[Cell], Any]) -> str:
    """The `--dry-run` text of a grid evaluated from checkpoints (`zoo`, `--checkpoint`): no
    seeds and no training recipe; per cell its published mIoU and whether its file is there
    (`lookup`: cell -> the published entry or None, experiments/zoo.py `published_for`)."""
    from benchmark.checkpoints.files import default_folder, find_file, names_for

    folder = checkpoint or default_folder()
    cells = list(cells)
    lines = [f"grid {grid.name}: {grid.description}",
             f"  evaluated from checkpoints in {folder} (no training, no seeds)"]
    found = 0
    for c in cells:
        published = lookup(c)
        path = find_file(folder, names_for(c, published))
        found += path is not None
        miou = f"published mIoU {c.paper_miou:.2f}" if c.paper_miou is not None else \
            "no published mIoU"
        where = (f"present: {path}" if path is not None else
                 f"missing (looked for {', '.join(names_for(c, published))}"
                 + (f"; download from {published.origin})" if published is not None else ")"))
        lines.append(f"  {c.row:<66} {c.column:<11} {miou}")
        lines.append(f"      {where}")
    lines.append(f"  {found} of {len(cells)} checkpoint files present")
    return "\n".join(lines)


def describe_jobs(executor: Any, runs: list[Run]) -> str:
    """What `--executor local|slurm` would submit for the runs not done: one job array per
    resource shape, with the parameters submitit hands the cluster (sbatch's resources)."""
    pending = [r for r in runs if not r.done]
    groups = executor.job_groups(pending)
    lines = [f"jobs (--executor {executor.name}): {len(pending)} run(s) not done, "
             f"{len(groups)} job array(s)"]
    for params, group in groups.items():
        rows = sorted({r.cell.row for r in group})
        shown = ", ".join(f"{k}={v}" for k, v in sorted(json.loads(params).items())
                          if k != "name")
        lines.append(f"  {len(group)} run(s) of {', '.join(rows)}: {shown}")
    return "\n".join(lines)
