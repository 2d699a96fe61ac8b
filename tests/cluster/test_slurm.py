"""On a real one-node SLURM (tests/cluster/slurm.sh): the smoke grid as one job array followed
with --status, and jobs interrupted mid-training that requeue, resume from their checkpoint and
finish bitwise equal to an uninterrupted run.

Deselect with `pytest -m "not slurm"`; they skip (saying why) where SLURM cannot start.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark.cli import main
from benchmark.config import Cell
from benchmark.overrides import apply_overrides
from benchmark.train.engine import train_and_evaluate
from benchmark.train.telemetry import HEARTBEAT_ENV
from benchmark.launch.executors import ClusterOptions, SlurmExecutor
from benchmark.launch.runs import plan
from benchmark.store import ResultsLayout
from benchmark.store import jsonable
from experiments.smoke import smoke

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
# 1 CPU and 2 GB per run: two runs share the 2-core node at once
SMALL_JOBS = ["resources.cpus_per_task=1", "resources.mem_gb=2"]
SMOKE = ["--grid", "smoke", "--no-progress"] + [
    arg for kv in ["train.iters=4", "data.train_images=8", "data.val_images=4",
                   "data.image_size=32", "train.batch_size=2", *SMALL_JOBS]
    for arg in ("--set", kv)]
DEADLINE_S = 420  # generous: the machine is shared; a healthy run takes a fraction of it


@contextmanager
def job_environment():
    """The environment sbatch hands the jobs (it exports the submitter's): they import this
    checkout, and use one thread each (2 jobs share 2 cores; on the CPU the result depends on
    the thread count, so the inline reference runs on one thread too)."""
    with pytest.MonkeyPatch.context() as m:
        paths = [str(ROOT), os.environ.get("PYTHONPATH")]
        m.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
        m.setenv("OMP_NUM_THREADS", "1")
        yield


@contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def read(path: Path | str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def jobs_log(results: Path, grid: str) -> list[dict[str, Any]]:
    lines = (results / "jobs" / f"{grid}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def slurm_states(job_id: str) -> dict[str, str]:
    """`sacct` rows (JobID -> State) of a job or array, through slurmdbd or the stand-in."""
    out = subprocess.run(["sacct", "-X", "-n", "--parsable2", "-o", "JobID,State,NodeList",
                          "-j", job_id], capture_output=True, text=True, timeout=60).stdout
    return dict(line.split("|")[:2] for line in out.splitlines() if re.match(r"^\d", line))


def status_rows(capsys, args: list[str]) -> list[str]:
    capsys.readouterr()
    assert main(args + ["--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "grid smoke:"
    return lines[1:]


def test_a_partition_slurm_does_not_have_is_one_line_and_nothing_queued(slurm_cluster, tmp_path,
                                                                        capsys):
    results = tmp_path / "results"
    args = SMOKE + ["--results", str(results), "--executor", "slurm", "--partition", "nosuch"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: slurm refused the job array"), err
    assert "partition" in err[0].lower() and "check --partition" in err[0]
    assert not (results / "jobs" / "smoke.jsonl").exists()


def test_smoke_grid_runs_as_one_job_array(slurm_cluster, tmp_path, capsys):
    results = tmp_path / "results"
    args = SMOKE + ["--results", str(results)]
    with job_environment():
        assert main(args + ["--executor", "slurm"]) == 0
    assert "follow with: python run_all.py --grid smoke --status" in capsys.readouterr().out

    entries = jobs_log(results, "smoke")
    array = entries[0]["job_id"].split("_")[0]
    n = len(smoke().cells)
    assert [e["job_id"] for e in entries] == [f"{array}_{i}" for i in range(n)], "one array"
    assert [e["row"] for e in entries] == [c.row for c in smoke().cells]

    # while the array runs, --status names each run's job and a live (or finished) state
    for line in status_rows(capsys, args):
        assert re.search(r"\b(pending|running|completing|completed|done)\b", line), line
        assert "done" in line or f"job {array}_" in line, line

    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        if len(list((results / "runs" / "smoke").glob("*/seed0.json"))) == n:
            break
        failed = [ln for ln in status_rows(capsys, args) if " failed " in ln]
        assert not failed, "\n".join(failed + [read(entries[0]["stderr"])[-3000:]])
        time.sleep(2)
    records = [json.loads(p.read_text()) for p in (results / "runs" / "smoke").glob("*/seed0.json")]
    assert len(records) == n, read(entries[0]["stderr"])[-3000:]
    assert {r["status"] for r in records} == {"done"}
    assert {r["cell_key"] for r in records} == {e["cell_key"] for e in entries}
    assert all(r["world_size"] == 1 for r in records)

    lines = status_rows(capsys, args)
    assert len(lines) == n and all(re.search(r" done +mIoU \d", ln) for ln in lines), lines
    deadline = time.time() + 60  # SLURM marks the tasks COMPLETED once the processes exit
    while time.time() < deadline and set(slurm_states(array).values()) != {"COMPLETED"}:
        time.sleep(1)
    assert slurm_states(array) == {e["job_id"]: "COMPLETED" for e in entries}
    for e in entries:
        assert "training " in read(e["stdout"]), e["stdout"]  # each task logged to its own file

    capsys.readouterr()
    assert main(args + ["--tables-only"]) == 0
    table = capsys.readouterr().out
    assert all(c.row in table for c in smoke().cells)


# ------------------------------------------------------------------------------ preemption

PREEMPT = ["train.batch_size=2", "data.train_images=8", "data.val_images=4", "data.image_size=32",
           "train.log_every=1", "train.checkpoint_every=100000", *SMALL_JOBS]
TRAIN_S = 12.0  # the interrupted runs train about this long on this machine (calibrated)
# How each job is interrupted:
# - usr2: what SLURM sends `--signal=USR2@120` before the time limit: submitit's handler calls
#   RunJob.checkpoint() and requeues the job itself (after the engine saved its state);
# - requeue: what preemption (PreemptMode=REQUEUE) does: SIGTERM, which submitit bypasses, then
#   SIGKILL after KillWait (5 s); the engine's checkpoint at the next step boundary must be on disk.
MODES = {"usr2": ["scancel", "--signal=USR2"], "requeue": ["scontrol", "requeue"]}


def preemption_cell(iters: int) -> Cell:
    """The prototype head (its momentum-updated prototypes must resume too), tiny data."""
    return apply_overrides(smoke().cells[-1], PREEMPT + [f"train.iters={iters}"])


def calibrated_iters() -> int:
    """Steps that take about TRAIN_S here and now (the machine is shared, its speed varies)."""
    probe = train_and_evaluate(preemption_cell(4), seed=0, progress=False)
    return int(min(200, max(8, TRAIN_S / probe.timings.step_s_median)))


def training_step_done(heartbeat: Path) -> int:
    """The last finished training step the run's heartbeat reports (0 before it trains)."""
    try:
        beat = json.loads(heartbeat.read_text())
    except (OSError, ValueError):
        return 0
    return int(beat.get("step", 0)) if beat.get("phase") == "training" else 0


@pytest.fixture(scope="module")
def preempted(slurm_cluster, tmp_path_factory):
    """Both modes at once (one job each): (cell, reference, {mode: (job, run)})."""
    with one_thread():
        cell = preemption_cell(calibrated_iters())
        reference = train_and_evaluate(cell, seed=0, progress=False)  # inline, uninterrupted
    opts = ClusterOptions(max_parallel=1)
    jobs = {}
    for mode in MODES:
        results = tmp_path_factory.mktemp(f"preempt-{mode}")
        (run,) = plan([cell], [0], ResultsLayout(results))
        with job_environment(), pytest.MonkeyPatch.context() as m:
            # the job's heartbeat after every step (0.05 s): the signal below lands right after
            # the first step, long before training could end within SLURM's KillWait
            m.setenv(HEARTBEAT_ENV, "0.05")
            (job,) = SlurmExecutor(opts, wait=False).submit([run])
        jobs[mode] = (job, run)
    signalled: set[str] = set()
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline and not all(job.done() for job, _ in jobs.values()):
        for mode, (job, run) in jobs.items():
            # synchronised on the run's own progress: its heartbeat says a step has finished
            step = training_step_done(run.heartbeat_path)
            if mode not in signalled and step >= 1:
                subprocess.run(MODES[mode] + [job.job_id], check=True, timeout=60)
                print(f"{mode}: {' '.join(MODES[mode])} {job.job_id} after step {step} of "
                      f"{cell.train.iters}")
                signalled.add(mode)
        time.sleep(0.2)
    for mode, (job, _) in jobs.items():
        assert job.done(), f"{mode}: job {job.job_id} unfinished after {DEADLINE_S} s"
    return cell, reference, jobs


@pytest.mark.parametrize("mode", list(MODES))
def test_interrupted_job_requeues_and_resumes_bitwise_equal(preempted, mode):
    cell, reference, jobs = preempted
    job, run = jobs[mode]
    logs = read(job.paths.stdout) + read(job.paths.stderr)
    result = job.result()
    assert result["status"] == "done", logs[-3000:]
    info = subprocess.run(["scontrol", "show", "job", job.job_id], capture_output=True,
                          text=True, timeout=60).stdout
    assert re.search(r"Restarts=[1-9]", info), f"job {job.job_id} was not requeued:\n{info}"
    if mode == "usr2":  # submitit's own path: checkpoint() then `scontrol requeue` from the job
        assert "Calling checkpoint method" in logs and "Requeued job" in logs, logs[-3000:]
    else:
        assert "Bypassing signal SIGTERM" in logs, logs[-3000:]

    record = json.loads(run.path.read_text())
    # a signal during evaluation resumes from the final checkpoint (step == iters)
    assert 0 < record["timings"]["resumed_from_step"] <= cell.train.iters, \
        f"the requeued job must resume from its checkpoint, not restart:\n{logs[-3000:]}"
    assert record["weights_sha256"] == reference.weights_sha256
    assert record["metrics"] == jsonable(reference.metrics.to_json())
    assert record["confusion"] == reference.confusion
    assert record["history"] == jsonable(reference.history)
    assert not any(run.checkpoint_dir.glob("step*")), "a finished run drops its checkpoints"
    assert run.weights_path.exists()
