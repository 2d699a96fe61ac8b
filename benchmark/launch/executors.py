"""Where runs are made: one `Executor` per place, all with the same `run(pending) -> Outcome`.

- `InlineExecutor`: each pending run in this process, one after another.
- `LocalExecutor`: submitit's local executor, one real subprocess per run (the runs are submitted
  as job arrays of at most `--max-parallel` runs, waiting for each).
- `SlurmExecutor`: submitit on SLURM; the runs sharing the same resources form one job array,
  throttled with `slurm_array_parallelism`; jobs checkpoint and requeue themselves on
  preemption or timeout. Without `--wait` it returns once the jobs are queued.
Every run, wherever it is made, is `benchmark/launch/runs.py`'s `execute_run` under the run's
lock (benchmark/launch/locks.py), so a run is never made twice at once.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import submitit

from methods.registry import import_plugins, require_plugins
from benchmark.catalog import REGISTRIES, cell_plugins
from benchmark.config import Cell, cell_from_dict
from benchmark.disk import DiskFull
from benchmark.launch import locks
from benchmark.launch.checks import check_run
from benchmark.launch.runs import Run, execute_run, now
from benchmark.launch.status import run_status
from benchmark.stops import Interrupted, Stopped
from benchmark.store import Record, ResultsLayout


@dataclass(frozen=True)
class Outcome:
    """What an executor did with a wave: runs that ended without a done record, and whether
    every run has ended (False: jobs still queued, e.g. SLURM without --wait)."""

    failures: int
    ended: bool = True


class Executor(Protocol):
    """Makes the pending runs of a wave somewhere; `name` is its `--executor` value."""

    name: ClassVar[str]

    def run(self, pending: list[Run]) -> Outcome: ...


# --------------------------------------------------------------------------- in this process


@dataclass
class InlineExecutor:
    """Each run in this process; a failed run is recorded and the rest go on; a signal stops
    the wave (`Interrupted`, the run resumes from its checkpoint)."""

    name: ClassVar[str] = "inline"
    progress: bool = True
    force: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> InlineExecutor:
        return cls(progress=not args.no_progress, force=args.force)

    def run(self, pending: list[Run]) -> Outcome:
        failures = 0
        for i, run in enumerate(pending, 1):
            print(f"[{i}/{len(pending)}] {run.cell.row} seed {run.seed}")
            lock, why = locks.claim(run, self.force)
            if lock is None:
                print(f"  skipped {run.cell.row} seed {run.seed}: {why}")
                continue
            try:
                record = _execute_here(run, self.progress)
            except (Interrupted, DiskFull, BrokenPipeError):  # the grid stops, no failed record
                raise
            except Exception as err:  # noqa: BLE001 - recorded as failed; continue the grid
                failures += 1
                print(f"  failed: {type(err).__name__}: {err}".splitlines()[0], file=sys.stderr)
                continue
            finally:
                lock.release()
            print(f"  mIoU {record.miou:.1f}  aAcc {record.metrics.aacc:.1f}  "
                  f"train {record.timings.train_s:.0f}s  -> {run.path}")
        return Outcome(failures)


def _execute_here(run: Run, progress: bool) -> Record:
    """`execute_run`, a signal outside the engine (start, record write) as `Interrupted`."""
    try:
        return execute_run(run, progress=progress)
    except Interrupted as err:  # one line: signal, step, checkpoint folder, what to do
        print(err, file=sys.stderr)
        raise
    except KeyboardInterrupt as err:
        name = err.args[0] if isinstance(err, Stopped) else "SIGINT"
        print(f"interrupted by {name}; run the same command again to resume", file=sys.stderr)
        raise Interrupted(name) from None


# --------------------------------------------------------------------------- cluster jobs


class RunJob(submitit.helpers.Checkpointable):
    """The callable a submitit job executes: one run. On preemption or timeout submitit calls
    `checkpoint()` (inherited: resubmit the same arguments) after the engine has saved its
    state at a step boundary, so the requeued job resumes where it stopped."""

    def __call__(self, cell: dict[str, Any], seed: int, results_root: str,
                 plugins: list[dict[str, str]] | None = None,
                 force: bool = False) -> dict[str, Any]:
        export_distributed_env()
        import_plugins()  # $PROTOSEG_PLUGINS, inherited from the submitting command
        require_plugins(plugins or [], REGISTRIES)  # one line naming a package not installed
        run = Run(cell_from_dict(cell), seed, ResultsLayout(results_root))
        check_run(run)  # before the model is built: one line, nothing trained
        lock, why = locks.claim(run, force)
        if lock is None:
            print(f"skipped {run.cell.row} seed {run.seed}: {why}", flush=True)
            return {"status": "skipped", "miou": None, "record": str(run.path)}
        with lock:
            record = execute_run(run, progress=False)
        return {"status": record.status, "miou": record.miou, "record": str(run.path)}


def export_distributed_env() -> None:
    """In a job of several tasks (one per GPU), the variables torch.distributed and Accelerate
    read (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, ...), from SLURM's.

    CUDA_VISIBLE_DEVICES stays as the job got it: submitit would narrow it to the local rank's
    index while LOCAL_RANK keeps that index, so rank 3 would see one GPU and ask for cuda:3
    (and on a node without device cgroups, index 3 may be another job's GPU). Accelerate picks
    cuda:LOCAL_RANK among the job's GPUs. Variables inherited from the submitting shell (a
    torchrun or an allocation) are overwritten by the job's own."""
    if submitit.JobEnvironment().num_tasks > 1:
        os.environ.pop("MASTER_PORT", None)  # submitit would reuse an inherited one
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                              overwrite=True)


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

    @classmethod
    def from_args(cls, args: argparse.Namespace, default_parallel: int) -> ClusterOptions:
        return cls(partition=args.partition, gpus_per_run=args.gpus_per_run,
                   timeout_min=args.timeout_min, account=args.account, qos=args.qos,
                   constraint=args.constraint, setup=tuple(args.slurm_setup),
                   max_parallel=args.max_parallel or default_parallel)


@dataclass
class SubmititExecutor:
    """Runs as submitit job arrays, one array per resource shape, logged to results/jobs/."""

    name: ClassVar[str]
    default_parallel: ClassVar[int]
    options: ClusterOptions = field(default_factory=ClusterOptions)
    force: bool = False
    wait: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SubmititExecutor:
        return cls(ClusterOptions.from_args(args, cls.default_parallel), force=args.force,
                   wait=args.wait)

    def job_parameters(self, cell: Cell) -> dict[str, Any]:
        """submitit parameters for a cell: one task per GPU, the time the recipe asks."""
        res, opts = cell.resources, self.options
        gpus = self.gpus(cell)
        params: dict[str, Any] = {
            "timeout_min": res.timeout_min if opts.timeout_min is None else opts.timeout_min,
            "tasks_per_node": max(1, gpus),
            "nodes": 1,
            "name": f"protoseg-{cell.grid}",
        }
        if gpus:
            params["gpus_per_node"] = gpus
        params.update(self.cluster_parameters(cell))
        params.update(self.options.extra)
        return params

    def cluster_parameters(self, cell: Cell) -> dict[str, Any]:
        """What this cluster adds to the common parameters."""
        return {}

    def gpus(self, cell: Cell) -> int:
        return cell.resources.gpus if self.options.gpus_per_run is None \
            else self.options.gpus_per_run

    def array_size(self, group: list[Run]) -> int:
        """Runs per job array: the local executor starts them all at once, so chunks of
        `max_parallel`."""
        return max(1, self.options.max_parallel)

    def to_submit(self, pending: list[Run]) -> list[Run]:
        """The runs worth a job: none that a live process holds (it would only skip them)."""
        return locks.skip_held(pending)

    def run(self, pending: list[Run]) -> Outcome:
        pending = self.to_submit(pending)
        self.submit(pending)
        if not self.wait:
            return Outcome(0, ended=False)  # the same command, run again, goes on
        return Outcome(sum(not r.done for r in pending))

    def job_groups(self, runs: list[Run]) -> dict[str, list[Run]]:
        """Runs by job shape (the submitit parameters, as sorted JSON): one job array each."""
        groups: dict[str, list[Run]] = {}
        for run in runs:
            groups.setdefault(json.dumps(self.job_parameters(run.cell), sort_keys=True),
                              []).append(run)
        return groups

    def submit(self, runs: list[Run]) -> list[submitit.Job]:
        """Submit runs as job arrays grouped by resources; log ids and paths to results/jobs/;
        wait for each array when `wait`."""
        if not runs:
            return []
        layout, grid = runs[0].layout, runs[0].cell.grid
        folder = layout.jobs_dir(grid, dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
        submitted: list[submitit.Job] = []
        for params_text, group in self.job_groups(runs).items():
            chunk = self.array_size(group)
            for start in range(0, len(group), chunk):
                part = group[start:start + chunk]
                jobs = self._submit_array(part, folder, json.loads(params_text))
                if self.wait:
                    _wait_for(jobs)
                submitted += jobs
        print(f"job ids and logs: {layout.jobs_log(grid)}")
        return submitted

    def _submit_array(self, part: list[Run], folder: Path, params: dict[str, Any]
                      ) -> list[submitit.Job]:
        """One job array of `part`, each job logged (one JSON line) and announced."""
        executor = submitit.AutoExecutor(folder=folder, cluster=self.name,
                                         slurm_max_num_timeout=3)
        executor.update_parameters(**params)
        layout = part[0].layout
        said = io.StringIO()  # submitit prints sbatch's refusal; it goes into SubmissionError
        try:
            with contextlib.redirect_stderr(said):
                jobs = executor.map_array(
                    RunJob(), [r.cell.to_dict() for r in part], [r.seed for r in part],
                    [str(layout.root.resolve())] * len(part),
                    [cell_plugins(r.cell) for r in part], [self.force] * len(part))
        except submitit.core.utils.FailedJobError as err:  # sbatch refused: its last line
            lines = (str(err) or said.getvalue()).strip().splitlines()
            raise SubmissionError(self.name, part, lines[-1] if lines else "") from None
        except submitit.core.utils.FailedSubmissionError as err:  # no job id in its answer
            raise SubmissionError(self.name, part, str(err).strip().splitlines()[0]) from None
        jobs_log = layout.jobs_log(part[0].cell.grid)
        jobs_log.parent.mkdir(parents=True, exist_ok=True)
        with open(jobs_log, "a") as f:
            for run, job in zip(part, jobs):
                entry = {"cell_key": run.cell.key, "seed": run.seed, "row": run.cell.row,
                         "job_id": job.job_id, "executor": self.name, "folder": str(folder),
                         "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
                         "submitted": now()}
                f.write(json.dumps(entry) + "\n")
                print(f"  submitted {run.cell.row} seed {run.seed}: job {job.job_id}  "
                      f"log {job.paths.stdout}")
        return jobs


class SubmissionError(RuntimeError):
    """The cluster refused a job array (sbatch's own words); nothing of it was queued."""

    def __init__(self, executor: str, part: list[Run], reason: str) -> None:
        reason = reason.strip() or "no reason given"
        cell = part[0].cell
        super().__init__(
            f"{executor} refused the job array of {len(part)} run(s) of grid {cell.grid} "
            f"({cell.row}, ...): {reason}; check --partition, --gpus-per-run (at most one "
            f"node's GPUs), --set resources.mem_gb=N and resources.cpus_per_task=N (a job's "
            f"host memory and CPUs), --account, --qos and --constraint (--dry-run with the same "
            f"options prints each job array's resources); arrays submitted before it are in "
            f"{part[0].layout.jobs_log(cell.grid)}")


def _wait_for(jobs: list[submitit.Job]) -> None:
    """Wait for every job; a failed one is one line (its record holds the error), a full disk
    stops the grid."""
    for job in jobs:
        try:
            job.result()
        except Exception as err:  # noqa: BLE001 - the record holds the error
            last = str(err).strip().splitlines()[-1]
            if last.startswith(f"{DiskFull.__module__}.DiskFull: "):
                raise DiskFull(last.split(": ", 1)[1]) from None  # no next job
            print(f"  job {job.job_id} failed: {last}")


@dataclass
class LocalExecutor(SubmititExecutor):
    """Subprocesses on this machine, `--max-parallel` (default 1) at a time, always awaited."""

    name: ClassVar[str] = "local"
    default_parallel: ClassVar[int] = 1

    def __post_init__(self) -> None:
        self.wait = True  # nothing would follow the jobs otherwise


LIVE_STATES = ("pending", "running", "requeued", "configuring", "completing", "suspended")


@dataclass
class SlurmExecutor(SubmititExecutor):
    """SLURM job arrays, one per resource shape, throttled by `--max-parallel` (default 64)."""

    name: ClassVar[str] = "slurm"
    default_parallel: ClassVar[int] = 64

    def cluster_parameters(self, cell: Cell) -> dict[str, Any]:
        """CPUs, memory, array throttle, signal and the account flags of the command line."""
        res, opts = cell.resources, self.options
        gpus = self.gpus(cell)  # the recipe's memory is for its GPUs: scaled to the job's
        mem_gb = res.mem_gb if not (gpus and res.gpus) else -(-res.mem_gb * gpus // res.gpus)
        params: dict[str, Any] = dict(
            cpus_per_task=res.cpus_per_task, mem_gb=mem_gb,
            slurm_array_parallelism=opts.max_parallel, slurm_signal_delay_s=opts.signal_delay_s)
        for key, value in (("slurm_partition", opts.partition), ("slurm_account", opts.account),
                           ("slurm_qos", opts.qos), ("slurm_constraint", opts.constraint)):
            if value:
                params[key] = value
        if opts.setup:
            params["slurm_setup"] = list(opts.setup)
        return params

    def array_size(self, group: list[Run]) -> int:
        return len(group)  # one array; SLURM throttles it (slurm_array_parallelism)

    def to_submit(self, pending: list[Run]) -> list[Run]:
        """Also none whose job is still queued or running (no double submission)."""
        pending = super().to_submit(pending)
        if self.force:
            return pending
        live = {id(r) for r, st in zip(pending, run_status(pending)) if st["state"] in LIVE_STATES}
        for run in pending:
            if id(run) in live:
                print(f"  {run.cell.row} seed {run.seed}: a job is already queued or running; "
                      f"skipped")
        return [r for r in pending if id(r) not in live]


EXECUTORS: dict[str, type[InlineExecutor] | type[SubmititExecutor]] = {
    e.name: e for e in (InlineExecutor, LocalExecutor, SlurmExecutor)}
