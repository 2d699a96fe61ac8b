"""Checkpoint and exact resume: an interrupted run finishes bitwise equal to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import submitit

from benchmark.train import checkpoint
from benchmark.overrides import apply_overrides
from benchmark.train.engine import train_and_evaluate
from benchmark.stops import Interrupted
from benchmark.launch.executors import RunJob
from benchmark.launch.runs import plan
from benchmark.store import ResultsLayout
from experiments.smoke import smoke

TINY = ["train.iters=12", "train.batch_size=4", "data.train_images=16", "data.val_images=4",
        "data.image_size=32", "train.log_every=1"]


def prototype_cell(*extra: str):
    cell = smoke().cells[-1]  # prototype head: the momentum-updated buffers must resume too
    return apply_overrides(cell, TINY + list(extra))


def interrupt_at(monkeypatch, step: int, signum: int = signal.SIGTERM) -> None:
    """Deliver a real signal to this process while step `step` is being computed."""
    import benchmark.train.engine as loop

    real_set_lr = loop.set_lr

    def set_lr(optimizer, cell, s):
        if s == step:
            os.kill(os.getpid(), signum)
        return real_set_lr(optimizer, cell, s)

    monkeypatch.setattr(loop, "set_lr", set_lr)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2])
def test_interrupted_run_resumes_bitwise_equal(tmp_path, monkeypatch, signum) -> None:
    cell = prototype_cell()
    reference = train_and_evaluate(cell, seed=3, progress=False)

    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as m:
        interrupt_at(m, step=5, signum=signum)
        with pytest.raises(Interrupted):
            train_and_evaluate(cell, seed=3, progress=False, checkpoint_dir=ckpt)
    found = checkpoint.latest_valid(ckpt)
    assert found is not None and found[1]["step"] == 6  # saved at the boundary after step 5

    resumed = train_and_evaluate(cell, seed=3, progress=False, checkpoint_dir=ckpt)
    assert resumed.timings.resumed_from_step == 6
    assert resumed.weights_sha256 == reference.weights_sha256
    assert resumed.metrics == reference.metrics
    assert resumed.confusion == reference.confusion
    assert resumed.history == reference.history


def test_periodic_checkpoints_keep_the_last_two(tmp_path) -> None:
    cell = prototype_cell("train.checkpoint_every=3")
    train_and_evaluate(cell, seed=0, progress=False, checkpoint_dir=tmp_path)
    # step 12 = the end of training: the final checkpoint, written before evaluation
    assert [p.name for p in checkpoint.valid_candidates(tmp_path)] == ["step9", "step12"]


def test_damaged_or_partial_checkpoint_falls_back_to_the_previous(tmp_path) -> None:
    cell = prototype_cell("train.checkpoint_every=4")
    reference = train_and_evaluate(cell, seed=1, progress=False)
    train_and_evaluate(cell, seed=1, progress=False, checkpoint_dir=tmp_path)
    newest, older = tmp_path / "step12", tmp_path / "step8"
    assert newest.is_dir() and older.is_dir()
    # a kill during a write leaves a temp folder: never considered
    partial = tmp_path / ".tmp-step16"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    # a damaged file in the newest checkpoint: detected by its checksum
    victim = next(p for p in newest.iterdir() if p.suffix == ".safetensors")
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    folder, meta = checkpoint.latest_valid(tmp_path)
    assert folder == older and meta["step"] == 8
    resumed = train_and_evaluate(cell, seed=1, progress=False, checkpoint_dir=tmp_path)
    assert resumed.timings.resumed_from_step == 8
    assert resumed.weights_sha256 == reference.weights_sha256
    # a checkpoint without meta.json (killed before the last file) is invalid too
    (older / "meta.json").unlink()
    with pytest.raises(ValueError, match="no meta.json"):
        checkpoint.validate(older)


def test_local_executor_preemption_requeues_and_resumes(tmp_path) -> None:
    """A real subprocess job gets submitit's preemption signal, checkpoints, requeues, resumes."""
    cell = prototype_cell("train.iters=60", "train.checkpoint_every=1000")
    run = plan([cell], [0], ResultsLayout(tmp_path / "results"))[0]
    reference = train_and_evaluate(cell, seed=0, progress=False)

    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local")
    executor.update_parameters(timeout_min=10, tasks_per_node=1)
    job = executor.submit(RunJob(), cell.to_dict(), 0, str(tmp_path / "results"))
    log = Path(job.paths.stdout)
    deadline = time.time() + 300
    while time.time() < deadline and "training " not in _read(log):
        time.sleep(0.2)  # the engine announces the start of training
    assert "training " in _read(log), _read(Path(job.paths.stderr))[-2000:]
    # What SLURM's --signal does before a timeout / on preemption: SIGUSR2 to the task process
    # (submitit's LocalJob._interrupt would signal its controller instead, which dies of it).
    os.kill(_task_pid(str(tmp_path / "jobs")), signal.SIGUSR2)
    result = job.result()
    assert result["status"] == "done"
    record = json.loads(run.path.read_text())
    assert record["timings"]["resumed_from_step"] > 0, "the requeued job must resume, not restart"
    assert record["weights_sha256"] == reference.weights_sha256
    assert record["metrics"]["miou"] == reference.metrics.miou
    assert not any(run.checkpoint_dir.glob("step*")), "finished runs drop their checkpoints"
    assert run.weights_path.exists()


def _task_pid(folder: str) -> int:
    """PID of the submitit task process working in `folder` (from /proc)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in cmdline and folder.encode() in cmdline:
            return int(proc.name)
    raise AssertionError(f"no submitit task process for {folder}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
