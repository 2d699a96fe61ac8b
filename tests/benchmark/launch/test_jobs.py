"""What a cluster job does before it trains (benchmark/launch/executors.py: RunJob): the
distributed environment of its tasks, and --force reaching the job."""

from __future__ import annotations

import os
import types

import pytest

import benchmark.launch.executors as executors
from benchmark.launch.runs import Run
from benchmark.store import Record, ResultsLayout, write_record
from experiments import get_grid

DISTRIBUTED = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
               "MASTER_PORT")


def unset_after(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> None:
    """Unset now and as they were after the test, whatever the code under test sets (delenv
    alone records nothing for a variable that is not set)."""
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_a_jobs_tasks_keep_the_jobs_gpus(monkeypatch) -> None:
    """Task 3 of a 4-GPU job: RANK/LOCAL_RANK/WORLD_SIZE from SLURM, CUDA_VISIBLE_DEVICES as
    the job got it (narrowed to "3" it would hide cuda:3 from the process that asks for it),
    and a stale MASTER_ADDR from the submitting shell replaced."""
    unset_after(monkeypatch, DISTRIBUTED)
    monkeypatch.setenv("MASTER_ADDR", "the-login-node")
    monkeypatch.setenv("MASTER_PORT", "29500")  # two jobs on one node must not share it
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "7", "SLURM_NTASKS": "4",
             "SLURM_PROCID": "3", "SLURM_LOCALID": "3", "SLURM_NODEID": "0",
             "SLURM_JOB_NODELIST": "gpu01", "SLURM_JOB_NUM_NODES": "1",
             "CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    executors.export_distributed_env()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
    assert (os.environ["RANK"], os.environ["LOCAL_RANK"], os.environ["WORLD_SIZE"]) == (
        "3", "3", "4")
    assert os.environ["MASTER_ADDR"] == "gpu01"
    assert os.environ["MASTER_PORT"] != "29500"  # submitit's port, drawn from the job id


def test_a_one_task_job_exports_nothing(monkeypatch) -> None:
    unset_after(monkeypatch, DISTRIBUTED)
    monkeypatch.setattr(executors.submitit, "JobEnvironment",
                        lambda: types.SimpleNamespace(num_tasks=1))
    executors.export_distributed_env()
    assert not any(name in os.environ for name in DISTRIBUTED)


@pytest.mark.parametrize("force", [False, True])
def test_force_reaches_the_job(tmp_path, monkeypatch, force) -> None:
    """A finished run: the job skips it, unless it was submitted with --force."""
    cell = get_grid("smoke").cells[0]
    run = Run(cell, 0, ResultsLayout(tmp_path / "results"))
    write_record(run.path, Record(
        status="done", grid=cell.grid, cell_key=cell.key, seed=0,
        metrics={"miou": 100.0, "aacc": 100.0, "per_class_iou": {"a": 100.0}, "pixels": 1},
        confusion=[[1]], history=[{"step": 0, "loss": 1.0}]))
    assert run.done
    trained = []
    monkeypatch.setattr(executors, "export_distributed_env", lambda: None)
    monkeypatch.setattr(executors, "check_run", lambda r: None)
    monkeypatch.setattr(executors, "execute_run", lambda r, progress: trained.append(r) or
                        types.SimpleNamespace(status="done", miou=51.0))
    out = executors.RunJob()(cell.to_dict(), 0, str(tmp_path / "results"), None, force)
    assert out["status"] == ("done" if force else "skipped") and len(trained) == int(force)


def test_a_forced_rerun_is_followed_by_every_rank(tmp_path, monkeypatch) -> None:
    """Ranks > 0 of a job redoing a finished run with --force go on (they skipped it: the old
    record is still there until rank 0 replaces it, and rank 0 waited for them)."""
    from benchmark.launch import locks

    unset_after(monkeypatch, DISTRIBUTED)
    for name, value in (("WORLD_SIZE", "2"), ("MASTER_ADDR", "n1"), ("MASTER_PORT", "1"),
                        ("RANK", "1")):
        monkeypatch.setenv(name, value)
    run = types.SimpleNamespace(lock_path=tmp_path / "seed0.lock", done=True)
    reads = iter([None, {"group": "n1:1"}])  # rank 0 has not taken the lock yet, then has
    monkeypatch.setattr(locks, "holder", lambda path: next(reads))
    monkeypatch.setattr(locks.time, "sleep", lambda s: None)
    follower, why = locks.claim(run, force=True)
    assert follower is not None and why == ""
    reads = iter([None])
    skipped, why = locks.claim(run)  # without --force a done run is skipped
    assert skipped is None and why == "finished by another process meanwhile"
