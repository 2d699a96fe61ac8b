"""Turning a grid into runs: plan which (cell, seed) still need a record, execute them.

Executors:
- `inline`: each pending run in this process, one after another.
- `local`: submitit's local executor, one real subprocess per run (the runs of a grid are
  submitted as job arrays of at most `--max-parallel` runs, waiting for each).
- `slurm`: submitit on SLURM; the runs sharing the same resources form one job array, throttled
  with `slurm_array_parallelism`. Jobs checkpoint and requeue themselves on preemption/timeout.
A run that fails still writes a record (status 'failed' with the one-line error), so no
finished run is lost; a run interrupted by a signal writes no record and resumes from its
checkpoint when run again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from methods.registry import import_plugins, require_plugins
from benchmark.catalog import REGISTRIES, cell_plugins
from benchmark.config import Cell, cell_from_dict
from benchmark.disk import DiskFull, as_disk_full
from benchmark.launch import locks
from benchmark.launch.checks import check_run
from benchmark.provenance import provenance, with_code_diff
from benchmark.store import (PUBLISHED_RECORD, Record, RecordError, ResultsLayout, as_layout,
                             is_done, read_record, write_record)

EXECUTORS = ("inline", "local", "slurm")


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
    def done(self) -> bool:
        return is_done(self.path)

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
         root: ResultsLayout | Path | str) -> list[Run]:
    """Every run of the grid, in grid order, seeds inner; cells that are one configuration
    (the same key, e.g. after `--set model.head.name=...`) are run once."""
    layout = as_layout(root)
    first: dict[str, Cell] = {}
    for cell in cells:
        first.setdefault(cell.key, cell)
    return [Run(c, s, layout) for c in first.values() for s in seeds]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def execute_run(run: Run, progress: bool = True) -> Record:
    """Train and evaluate one run (resuming from its checkpoint) and write its record."""
    from benchmark.train.engine import make_accelerator, train_and_evaluate
    from benchmark.stops import Interrupted

    started = _now()
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
        record = Record(status="failed", **base, error=_one_line(err),
                        traceback=traceback.format_exc(), finished=_now(),
                        provenance=provenance())
        if accelerator.is_main_process:
            save_record(run.path, record)
        raise
    record = Record(
        status="done", **base, metrics=result.metrics, params=result.params,
        timings=result.timings, memory=result.memory, history=result.history,
        confusion=result.confusion, weights_sha256=result.weights_sha256, finished=_now(),
        provenance={**provenance(), "pretrained": result.pretrained},
    )
    if accelerator.is_main_process:
        save_record(run.path, record)
        run.clear_checkpoints()
    return record


def _one_line(err: BaseException) -> str:
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
    except OSError as err:  # JSON on stderr and a fallback file (benchmark/launch/checks.py)
        from benchmark.launch.checks import keep_on_full_disk, keep_unsaved

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


# --------------------------------------------------------------------------- cluster jobs


class RunJob(submitit.helpers.Checkpointable):
    """The callable a submitit job executes: one run. On preemption or timeout submitit calls
    `checkpoint()` (inherited: resubmit the same arguments) after the engine has saved its
    state at a step boundary, so the requeued job resumes where it stopped."""

    def __call__(self, cell: dict[str, Any], seed: int, results_root: str,
                 plugins: list[dict[str, str]] | None = None) -> dict[str, Any]:
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # one process per GPU: hand the distributed env to Accelerate
            submitit.helpers.TorchDistributedEnvironment().export()
        import_plugins()  # $PROTOSEG_PLUGINS, inherited from the submitting command
        require_plugins(plugins or [], REGISTRIES)  # one line naming a package not installed
        run = Run(cell_from_dict(cell), seed, ResultsLayout(results_root))
        check_run(run, run.layout)  # before the model is built: one line, nothing trained
        lock, why = locks.claim(run)
        if lock is None:
            print(f"skipped {run.cell.row} seed {run.seed}: {why}", flush=True)
            return {"status": "skipped", "miou": None, "record": str(run.path)}
        with lock:
            record = execute_run(run, progress=False)
        return {"status": record.status, "miou": record.miou, "record": str(run.path)}


@dataclass(frozen=True)
class ClusterOptions:
    """Command-line resources; None means "take the cell's recipe"."""

    partition: str | None = None
    gpus_per_run: int | None = None
    timeout_min: int | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()
    max_parallel: int = 64
    signal_delay_s: int = 120
    extra: dict[str, Any] = field(default_factory=dict)


def job_parameters(cell: Cell, opts: ClusterOptions, executor: str) -> dict[str, Any]:
    """submitit parameters for a cell: one task per GPU, CPUs/memory per recipe."""
    res = cell.resources
    gpus = res.gpus if opts.gpus_per_run is None else opts.gpus_per_run
    params: dict[str, Any] = {
        "timeout_min": res.timeout_min if opts.timeout_min is None else opts.timeout_min,
        "tasks_per_node": max(1, gpus),
        "nodes": 1,
        "name": f"protoseg-{cell.grid}",
    }
    if executor == "slurm":
        if gpus:
            params["gpus_per_node"] = gpus
        params.update(
            cpus_per_task=res.cpus_per_task, mem_gb=res.mem_gb,
            slurm_array_parallelism=opts.max_parallel, slurm_signal_delay_s=opts.signal_delay_s,
        )
        for key, value in (("slurm_partition", opts.partition), ("slurm_account", opts.account),
                           ("slurm_qos", opts.qos), ("slurm_constraint", opts.constraint)):
            if value:
                params[key] = value
        if opts.setup:
            params["slurm_setup"] = list(opts.setup)
    elif gpus:
        params["gpus_per_node"] = gpus
    params.update(opts.extra)
    return params


def make_executor(kind: str, folder: Path, params: dict[str, Any]) -> submitit.Executor:
    executor = submitit.AutoExecutor(folder=folder, cluster=kind, slurm_max_num_timeout=3)
    executor.update_parameters(**params)
    return executor


def submit(runs: list[Run], kind: str, results: ResultsLayout | Path | str, opts: ClusterOptions,
           wait: bool = False) -> list[submitit.Job]:
    """Submit runs as job arrays grouped by resources; log ids and paths to results/jobs/."""
    if not runs:
        return []
    layout = as_layout(results)
    grid = runs[0].cell.grid
    folder = layout.jobs_dir(grid, dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(json.dumps(job_parameters(run.cell, opts, kind), sort_keys=True),
                          []).append(run)
    jobs_log = layout.jobs_log(grid)
    jobs_log.parent.mkdir(parents=True, exist_ok=True)
    submitted: list[submitit.Job] = []
    for params_text, group in groups.items():
        chunk = len(group) if kind == "slurm" else max(1, opts.max_parallel)
        for start in range(0, len(group), chunk):
            part = group[start:start + chunk]
            executor = make_executor(kind, folder, json.loads(params_text))
            jobs = executor.map_array(
                RunJob(), [r.cell.to_dict() for r in part], [r.seed for r in part],
                [str(layout.root.resolve())] * len(part), [cell_plugins(r.cell) for r in part],
            )
            with open(jobs_log, "a") as f:
                for run, job in zip(part, jobs):
                    entry = {"cell_key": run.cell.key, "seed": run.seed, "row": run.cell.row,
                             "job_id": job.job_id, "executor": kind, "folder": str(folder),
                             "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
                             "submitted": _now()}
                    f.write(json.dumps(entry) + "\n")
                    print(f"  submitted {run.cell.row} seed {run.seed}: job {job.job_id}  "
                          f"log {job.paths.stdout}")
            if kind != "slurm" or wait:
                for job in jobs:
                    try:
                        job.result()
                    except Exception as err:  # noqa: BLE001 - the record holds the error
                        last = str(err).strip().splitlines()[-1]
                        if last.startswith(f"{DiskFull.__module__}.DiskFull: "):
                            raise DiskFull(last.split(": ", 1)[1]) from None  # no next job
                        print(f"  job {job.job_id} failed: {last}")
            submitted += jobs
    print(f"job ids and logs: {jobs_log}")
    return submitted


# --------------------------------------------------------------------------- status


def _last_line(path: str) -> str:
    try:
        lines = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run_status(runs: list[Run]) -> list[dict[str, str]]:
    """done / failed (with the error) / damaged from records; running / pending from the job
    log (a damaged record counts as not done: the run is made again)."""
    jobs = _latest_jobs(runs[0].layout.jobs_log(runs[0].cell.grid)) if runs else {}
    rows = []
    for run in runs:
        row = {"row": run.cell.row, "seed": str(run.seed), "state": "not submitted",
               "detail": "", "job": ""}
        row.update(_record_state(run.path))
        entry = jobs.get((run.cell.key, run.seed))
        if entry and row["state"] != "done":
            row["job"] = entry["job_id"]
            state = _job_state(entry)
            if row["state"] == "failed" and state in ("RUNNING", "PENDING", "REQUEUED"):
                row["state"] = state.lower()  # a retry is under way
            elif row["state"] in ("not submitted", "damaged"):
                row["state"] = state.lower()
                if state in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"):
                    row["state"] = "failed"
                    row["detail"] = _last_line(entry["stderr"])
        rows.append(row)
    return rows


def _record_state(path: Path) -> dict[str, str]:
    """The state and detail a record gives; nothing where there is no record."""
    if not path.exists():
        return {}
    try:
        record = read_record(path)
    except (OSError, RecordError) as err:
        return {"state": "damaged", "detail": f"{err}; the run is made again"}
    if record.done:
        return {"state": "done", "detail": f"mIoU {record.miou:.1f}"}
    return {"state": record.status, "detail": record.error or ""}


def _latest_jobs(log: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """The latest submission of each (cell key, seed) in the job log; damaged lines skipped."""
    jobs: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return jobs
    for line in lines:
        try:
            entry = json.loads(line)
            jobs[(entry["cell_key"], entry["seed"])] = entry  # the latest submission wins
        except (ValueError, KeyError, TypeError):
            continue
    return jobs


def _job_state(entry: dict[str, Any]) -> str:
    """SLURM state via submitit (sacct), else squeue (sacct lags behind a fresh submission by
    seconds); local jobs by their files."""
    if entry["executor"] == "slurm":
        try:
            state = submitit.SlurmJob(folder=entry["folder"], job_id=entry["job_id"]).state
        except Exception:  # noqa: BLE001 - sacct missing or job unknown
            state = "UNKNOWN"
        if state == "UNKNOWN":
            state = _squeue_state(entry["job_id"])
        return state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
    if Path(entry["stdout"]).exists():
        return "FINISHED" if _result_exists(entry) else "RUNNING"
    return "PENDING"


def _squeue_state(job_id: str) -> str:
    """The state in SLURM's queue, which knows a job from the moment it is submitted."""
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%T", "-j", job_id], capture_output=True,
                             text=True, timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "UNKNOWN"
    return out[0] if out else "UNKNOWN"


def _result_exists(entry: dict[str, Any]) -> bool:
    return (Path(entry["folder"]) / f"{entry['job_id']}_0_result.pkl").exists() or \
        (Path(entry["folder"]) / f"{entry['job_id']}_result.pkl").exists()
