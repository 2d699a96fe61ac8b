"""A run: one (cell, seed) of a grid, where its files live, what its record says, and making it.

`plan` turns a grid's cells and seeds into runs; `run_state` is the one place that reads what a
run's record says (none, done, failed, damaged), for the planner, the dry run and `--status`
alike; `execute_run` trains and evaluates one run in this process and writes its record (the
executors in benchmark/launch/executors.py decide where that happens). A run that fails still
writes a record (status 'failed', the one-line error), so no finished run is lost; a run stopped
by a signal writes none and resumes from its checkpoint when run again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark import store  # its writer looked up at call time (tests replace it)
from benchmark.catalog import cell_plugins
from benchmark.config import Cell
from benchmark.disk import DiskFull, as_disk_full
from benchmark.provenance import provenance, with_code_diff
from benchmark.stops import Interrupted
from benchmark.store import (PUBLISHED_RECORD, Record, RecordError, ResultsLayout, jsonable,
                             read_record, report_bad_record, write_record)

NONE, DONE, FAILED, DAMAGED = "none", "done", "failed", "damaged"


@dataclass(frozen=True)
class RunState:
    """What a run's record says: `state` (none, done, failed, damaged), a one-line `detail`
    (mIoU, the error, why it is unusable) and the record where one could be read."""

    state: str
    detail: str = ""
    record: Record | None = None

    @property
    def done(self) -> bool:
        return self.state == DONE


def run_state(path: Path | str, kind: str = "trained") -> RunState:
    """The state of the record at `path`. A damaged record is reported once (one line naming
    the file) and counts as not done; so does a record of the other kind (an evaluation an
    older version wrote at a training's path, moved aside when the run is made)."""
    path = Path(path)
    if not path.exists():
        return RunState(NONE)
    try:
        record = read_record(path)
    except (OSError, RecordError) as err:
        report_bad_record(err)  # the one line naming the file and the problem
        return RunState(DAMAGED, "unusable record (the warning says why); the run is made again")
    if record.kind != kind:
        return RunState(NONE, f"holds a {record.kind} record", record)
    if record.done:
        miou = record.miou
        return RunState(DONE, f"mIoU {miou:.1f}" if miou is not None else "", record)
    return RunState(FAILED, record.error or "", record)


@dataclass(frozen=True)
class Run:
    """One (cell, seed) and, from the results layout, where its files live."""

    cell: Cell
    seed: int
    layout: ResultsLayout

    def _where(self) -> tuple[str, str, int]:
        return self.cell.grid, self.cell.key, self.seed

    @property
    def path(self) -> Path:
        """The run's record."""
        return self.layout.record(*self._where())

    @property
    def state(self) -> RunState:
        return run_state(self.path)

    @property
    def done(self) -> bool:
        return self.state.done

    @property
    def checkpoint_dir(self) -> Path:
        return self.layout.checkpoints(*self._where())

    @property
    def weights_path(self) -> Path:
        return self.layout.final_weights(*self._where())

    @property
    def heartbeat_path(self) -> Path:
        return self.layout.heartbeat(*self._where())

    @property
    def lock_path(self) -> Path:
        return self.layout.lock(*self._where())

    @property
    def log_dir(self) -> Path:
        return self.layout.logs(*self._where())

    def clear_checkpoints(self) -> None:
        """Drop training checkpoints (not the final weights): a fresh start or a finished run."""
        for folder in self.checkpoint_dir.glob("*step*"):
            shutil.rmtree(folder, ignore_errors=True)


def plan(cells: list[Cell] | tuple[Cell, ...], seeds: list[int],
         layout: ResultsLayout) -> list[Run]:
    """Every run of the grid, in grid order, seeds inner; cells that are one configuration
    (the same key, e.g. after `--set model.head.name=...`) are run once."""
    first: dict[str, Cell] = {}
    for cell in cells:
        first.setdefault(cell.key, cell)
    return [Run(c, s, layout) for c in first.values() for s in seeds]


# --------------------------------------------------------------------------- making one run


def now() -> str:
    """The current UTC time as records store it."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def execute_run(run: Run, progress: bool = True) -> Record:
    """Train and evaluate one run (resuming from its checkpoint) and write its record."""
    from benchmark.train.engine import make_accelerator, train_and_evaluate

    started = now()
    accelerator = make_accelerator(run.cell)
    base = {"grid": run.cell.grid, "cell_key": run.cell.key, "seed": run.seed,
            "cell": run.cell.to_dict(), "started": started,
            "world_size": accelerator.num_processes, "plugins": cell_plugins(run.cell)}
    try:
        result = train_and_evaluate(run.cell, run.seed, progress=progress, accelerator=accelerator,
                                    checkpoint_dir=run.checkpoint_dir,
                                    weights_path=run.weights_path,
                                    heartbeat_path=run.heartbeat_path, log_dir=run.log_dir)
    except (Interrupted, DiskFull, BrokenPipeError):
        raise  # resumable: no record (the disk or the pipe would not take it), a checkpoint
    except Exception as err:  # noqa: BLE001 - any failure becomes a failed record, then re-raised
        record = Record(status="failed", **base, error=one_line(err),
                        traceback=traceback.format_exc(), finished=now(),
                        provenance=provenance())
        if accelerator.is_main_process:
            save_record(run.path, record)
        raise
    record = Record(
        status="done", **base, metrics=result.metrics, params=result.params,
        timings=result.timings, memory=result.memory, history=result.history,
        confusion=result.confusion, weights_sha256=result.weights_sha256, finished=now(),
        provenance=provenance(pretrained=result.pretrained),
    )
    if accelerator.is_main_process:
        save_record(run.path, record)
        run.clear_checkpoints()
    return record


def one_line(err: BaseException) -> str:
    """`Type: message`, first line only: what a failed record and the console say."""
    return (f"{type(err).__name__}: {err}".splitlines() or [type(err).__name__])[0]


def save_record(path: Path, record: Record) -> Path:
    """Write the record; when that fails, print it to stderr as JSON under a one-line error
    naming the path, so the computed result is not lost, and re-raise. A published evaluation
    that an older version wrote at this trained run's path moves to its own file first; a run
    from uncommitted code gets its diff beside the record (benchmark/provenance.py)."""
    try:
        _move_old_evaluation(path)
        record.provenance = with_code_diff(path, record.provenance)  # uncommitted code's diff
        return write_record(path, record)
    except OSError as err:  # JSON on stderr and a fallback file
        full = as_disk_full(err, path, "the record")
        if isinstance(full, DiskFull):  # no dump of the record: one line, the grid stops
            raise DiskFull(f"{full}; {keep_on_full_disk(path, record.to_json())}") from None
        raise OSError(keep_unsaved(path, record.to_json(), err)) from None


def _move_old_evaluation(path: Path) -> None:
    """Keep a `published-checkpoint` record found at a trained run's path (written there before
    evaluations had their own file) by renaming it to the cell's published record."""
    try:
        old = read_record(path)
    except (OSError, RecordError):
        return
    target = path.parent / PUBLISHED_RECORD
    if old.kind == "published-checkpoint" and not target.exists():
        os.replace(path, target)


def keep_unsaved(path: Path, record: dict[str, Any], err: OSError) -> str:
    """A record that could not be written to `path`: print it to stderr as JSON and write it
    under a fallback name beside it or in $TMPDIR; returns one line saying where it went."""
    text = json.dumps(jsonable(record), indent=2, sort_keys=True, allow_nan=False)
    print(text, file=sys.stderr)
    reason = os.strerror(err.errno) if err.errno else str(err)  # the store's text repeats path
    fallback = _keep(path, text)
    if fallback is not None:
        return (f"cannot write record {path} ({reason}); the result is kept in "
                f"{fallback} and printed above: move it to {path} once the folder is writable")
    return (f"cannot write record {path} ({reason}); the result is printed above "
            f"as JSON: save it as {path} once the folder is writable")


def keep_on_full_disk(path: Path, record: dict[str, Any]) -> str:
    """A record the full disk did not take: kept in a fallback file where one can be written,
    never printed (a record is hundreds of lines); says where, or that the run's final
    checkpoint (deleted only after its record) makes the same command evaluate it again."""
    fallback = _keep(path, json.dumps(jsonable(record), indent=2, sort_keys=True,
                                      allow_nan=False))
    if fallback is not None:
        return f"the result is kept in {fallback}: move it to {path} once there is room"
    return "the run's final checkpoint is kept: the same command evaluates it again"


def _keep(path: Path, text: str) -> Path | None:
    """Write `text` under a fallback name beside `path` or in $TMPDIR; where it went."""
    parts = Path(path).parts[-3:]  # <grid>/<key>/seed<k>.json
    # not `seed*.json`: the store would read a fallback beside the record as a second record
    candidates = [Path(path).with_name(f"unsaved-{Path(path).stem}-{os.getpid()}.json"),
                  Path(tempfile.gettempdir()) / "protoseg-unsaved" / Path(*parts)]
    for fallback in candidates:
        try:
            store.atomic_write(fallback, text + "\n")
        except OSError:
            continue
        return fallback
    return None
