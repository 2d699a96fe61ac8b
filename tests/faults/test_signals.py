"""SIGTERM / SIGUSR2 / SIGINT at any moment of a run: nothing finished is lost (issue 15, 1 and 8).

Each signal is raised from the run's own progress (an `on_step` callback, a hook inside
evaluation, start-up), never after a delay, so the tests do not depend on the machine's speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import benchmark.train.evaluate as evaluate
from benchmark.overrides import apply_overrides
from benchmark.train import checkpoint
from benchmark.train.engine import RunResult, train_and_evaluate
from benchmark.stops import Interrupted
from experiments.smoke import smoke

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 8
SIGNALS = [signal.SIGTERM, signal.SIGUSR2, signal.SIGINT]
TINY = [f"train.iters={TOTAL}", "train.batch_size=4", "data.train_images=16",
        "data.val_images=4", "data.image_size=32", "train.log_every=1", "eval.batch_size=1"]


def tiny_cell():
    return apply_overrides(smoke().cells[-1], TINY)  # prototype head: buffers must resume too


@pytest.fixture(scope="module")
def reference() -> RunResult:
    return train_and_evaluate(tiny_cell(), seed=5, progress=False)


def raise_at(step: int, signum: int):
    """An `on_step` callback that raises `signum` in this process after training step `step`."""
    def on_step(s: int) -> None:
        if s == step:
            signal.raise_signal(signum)
    return on_step


def assert_resumes_equal(ckpt: Path, reference: RunResult, from_step: int) -> None:
    """The checkpoint is valid at `from_step` and the rerun finishes as the uninterrupted run."""
    found = checkpoint.latest_valid(ckpt)
    assert found is not None and found[1]["step"] == from_step
    resumed = train_and_evaluate(tiny_cell(), seed=5, progress=False, checkpoint_dir=ckpt)
    assert resumed.timings.resumed_from_step == from_step
    assert resumed.weights_sha256 == reference.weights_sha256
    assert resumed.metrics == reference.metrics
    assert resumed.confusion == reference.confusion
    assert resumed.history == reference.history


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("step", [3, TOTAL - 1], ids=["middle", "last"])
def test_signal_at_a_step_checkpoints_and_resumes(tmp_path, reference, signum, step) -> None:
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Interrupted) as err:
        train_and_evaluate(tiny_cell(), seed=5, progress=False, checkpoint_dir=ckpt,
                           on_step=raise_at(step, signum))
    name = signal.Signals(signum).name
    assert str(err.value) == (f"interrupted by {name} at step {step + 1} of {TOTAL}; checkpoint "
                              f"saved in {ckpt}: run the same command again to resume")
    assert signal.getsignal(signum) is not None  # the previous handlers are back
    assert_resumes_equal(ckpt, reference, from_step=step + 1)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_during_evaluation_resumes_without_training(tmp_path, monkeypatch, reference,
                                                          signum) -> None:
    calls = []
    real = evaluate.confusion_matrix

    def confusion_matrix(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signum)  # while the first evaluation batch is being scored
        return real(*args, **kwargs)

    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as m:
        m.setattr(evaluate, "confusion_matrix", confusion_matrix)
        with pytest.raises(Interrupted, match=f"at step {TOTAL} of {TOTAL} during evaluation"):
            train_and_evaluate(tiny_cell(), seed=5, progress=False, checkpoint_dir=ckpt)
    assert len(calls) == 1, "evaluation stops at the next batch, not at the end of the split"
    assert_resumes_equal(ckpt, reference, from_step=TOTAL)  # evaluates only, no retraining


def test_a_finished_run_keeps_its_final_checkpoint_for_the_record_write(tmp_path,
                                                                       reference) -> None:
    """A kill while the caller writes the record (after the engine returned) loses no
    training: the final checkpoint stays until the caller deletes it, the rerun evaluates."""
    done = train_and_evaluate(tiny_cell(), seed=5, progress=False, checkpoint_dir=tmp_path)
    assert done.weights_sha256 == reference.weights_sha256
    assert_resumes_equal(tmp_path, reference, from_step=TOTAL)


def test_signal_during_start_up_is_not_lost(tmp_path, monkeypatch, reference) -> None:
    import benchmark.train.engine as engine

    real = engine.build_dataset

    def build_dataset(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)  # before any training step
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(engine, "build_dataset", build_dataset)
        with pytest.raises(Interrupted, match="at step 0 of .*nothing to save yet"):
            train_and_evaluate(tiny_cell(), seed=5, progress=False, checkpoint_dir=tmp_path)
    assert checkpoint.latest_valid(tmp_path) is None
    resumed = train_and_evaluate(tiny_cell(), seed=5, progress=False, checkpoint_dir=tmp_path)
    assert resumed.timings.resumed_from_step == 0
    assert resumed.weights_sha256 == reference.weights_sha256


def test_ctrl_c_in_run_all_prints_one_line_and_exits_3(tmp_path) -> None:
    """Ctrl-C during training: exit code 3, one line on stderr, no traceback, a checkpoint."""
    cmd = [sys.executable, "run_all.py", "--grid", "smoke", "--no-progress",
           "--results", str(tmp_path / "results"), "--set", "train.iters=100000",
           *[a for o in TINY[1:5] for a in ("--set", o)]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # the engine announces training once its handlers are in
            if line.startswith("training "):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("interrupted by SIGINT at step ")
    assert lines[0].endswith(": run the same command again to resume")
    assert list((tmp_path / "results" / "checkpoints").rglob("meta.json"))
    # live progress of the interrupted run: its heartbeat and its TensorBoard events file
    beats = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("heartbeat.json")]
    assert [(b["phase"], b["pid"], b["total"]) for b in beats] == [("training", proc.pid, 100000)]
    assert list((tmp_path / "results").rglob("events.out.tfevents.*"))


class SignalledInWorker(torch.utils.data.Dataset):
    """Two evaluation samples; loading one in a DataLoader worker sends SLURM's signals to that
    worker (SLURM signals every process of a job step)."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.utils.data.get_worker_info() is not None:
            for signum in SIGNALS:
                os.kill(os.getpid(), signum)
        return torch.zeros(3, 8, 8), torch.zeros(8, 8, dtype=torch.long)


def test_evaluation_workers_leave_signals_to_the_main_process() -> None:
    """A worker killed by SIGTERM would fail the run; the main process handles the signal."""
    conv = torch.nn.Conv2d(3, 2, 1)

    class Model(torch.nn.Module):
        def forward(self, x):
            return SimpleNamespace(logits=conv(x))

    cm = evaluate.predict_confusion(Model(), SignalledInWorker(), 2, 255, batch_size=1,
                                    progress=False, num_workers=1)
    assert int(cm.sum()) == 2 * 8 * 8
