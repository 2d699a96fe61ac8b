"""Turning a grid into runs: plan which (cell, seed) still need a record, execute them.

Executors: `inline` runs each pending run in this process, one after another. A run that fails
still writes a record (status 'failed' with the one-line error) so no finished run is lost.
"""

from __future__ import annotations

import datetime as dt
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config import Cell
from benchmark.provenance import provenance
from benchmark.store import RECORD_SCHEMA, is_done, record_path, write_record

EXECUTORS = ("inline",)


@dataclass(frozen=True)
class Run:
    """One (cell, seed) and where its record goes."""

    cell: Cell
    seed: int
    path: Path

    @property
    def done(self) -> bool:
        return is_done(self.path)


def plan(cells: list[Cell] | tuple[Cell, ...], seeds: list[int], root: Path | str) -> list[Run]:
    """Every run of the grid, in grid order, seeds inner."""
    return [Run(c, s, record_path(root, c.grid, c.key, s)) for c in cells for s in seeds]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def execute_run(run: Run, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate one run and write its record (done, or failed with the error)."""
    from benchmark.engine import make_accelerator, train_and_evaluate

    started = _now()
    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA, "grid": run.cell.grid, "cell_key": run.cell.key,
        "seed": run.seed, "cell": run.cell.to_dict(), "started": started,
    }
    accelerator = make_accelerator(run.cell)
    try:
        result = train_and_evaluate(run.cell, run.seed, progress=progress, accelerator=accelerator)
    except Exception as err:  # noqa: BLE001 - any failure becomes a failed record, then re-raised
        record.update(status="failed", error=f"{type(err).__name__}: {err}".splitlines()[0],
                      traceback=traceback.format_exc(), finished=_now(), **provenance())
        if accelerator.is_main_process:
            write_record(run.path, record)
        raise
    record.update(
        status="done", error=None, metrics=result.metrics, params=result.params,
        timings=result.timings, memory=result.memory, history=result.history,
        confusion=result.confusion, world_size=accelerator.num_processes,
        finished=_now(), **provenance(),
    )
    if accelerator.is_main_process:
        write_record(run.path, record)
    return record
