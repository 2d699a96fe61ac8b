"""Checkpoints, the training state they hold, resuming from them, and the signals that save them.

A checkpoint is a folder written atomically (files, then a manifest with their SHA-256); the
newest valid one is resumed and damaged ones are skipped with a warning; SIGUSR2/SIGTERM/SIGINT
save one at the next step boundary and stop with `Interrupted`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from accelerate import Accelerator

from benchmark.config import Cell
from benchmark.disk import as_disk_full
from benchmark.stops import Interrupted, SIGNALS, Stopped, stop_now
from benchmark.train.telemetry import HealthMonitor, Heartbeat, TrainLog


# ------------------------------------------------------------------------------- checkpoint folders


META = "meta.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != META)


def _step_of(folder: Path) -> int:
    return int(folder.name[len("step"):])


def save(accelerator: Accelerator, root: Path, step: int, extra: dict[str, Any],
         keep: int = 2) -> Path:
    """Save model, optimizer, RNG states (all processes) and `extra` as `root/step<step>`."""
    final = root / f"step{step}"
    tmp = root / f".tmp-step{step}"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            meta = {"step": step, "extra": extra,
                    "files": {str(p.relative_to(tmp)): _sha256(p) for p in _files(tmp)}}
            with open(tmp / META, "w") as f:
                json.dump(meta, f)
                f.flush()
                os.fsync(f.fileno())
    except Exception as err:
        # torch's writer says `inline_container.cc: unexpected pos` for ENOSPC: name the disk
        need = state_bytes(accelerator)
        full = as_disk_full(err, tmp, f"the checkpoint of step {step} in", need)
        shutil.rmtree(tmp, ignore_errors=True)  # the earlier checkpoints stay as they were
        if full is err:
            raise
        raise full from None
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(valid_candidates(root), key=_step_of)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def state_bytes(accelerator: Accelerator) -> int:
    """Bytes of the tensors a checkpoint holds: the models' and optimizers' states."""
    total = 0
    states = [m.state_dict() for m in accelerator._models]
    states += [o.state_dict().get("state", {}) for o in accelerator._optimizers]
    stack: list[Any] = states
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif hasattr(item, "element_size") and hasattr(item, "numel"):
            total += item.element_size() * item.numel()
    return total


def valid_candidates(root: Path) -> list[Path]:
    """Checkpoint folders by name (not yet validated), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step*") if p.is_dir() and p.name[4:].isdigit()]
    return sorted(found, key=_step_of)


def validate(folder: Path) -> dict[str, Any]:
    """Return the checkpoint's meta if every listed file is present and intact, else raise."""
    meta_path = folder / META
    if not meta_path.exists():
        raise ValueError(f"{folder}: no {META} (write interrupted)")
    try:  # a damaged meta.json names its folder too
        meta = json.loads(meta_path.read_text())
        files = dict(meta["files"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{folder}: {META} is damaged ({type(err).__name__}: {err})") from None
    for name, digest in files.items():
        path = folder / name
        if not path.exists():
            raise ValueError(f"{folder}: missing {name}")
        if _sha256(path) != digest:
            raise ValueError(f"{folder}: {name} is damaged (checksum mismatch)")
    return meta


def latest_valid(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """Newest checkpoint that validates; damaged ones are reported and skipped."""
    for folder in reversed(valid_candidates(root)):
        try:
            return folder, validate(folder)
        except (ValueError, json.JSONDecodeError, KeyError) as err:
            print(f"warning: ignoring checkpoint {err}")
    return None


def load(accelerator: Accelerator, folder: Path) -> None:
    """Restore model, optimizer and RNG states saved by `save`."""
    accelerator.load_state(str(folder))


# ------------------------------------------------------------------------------- the training state


@dataclass
class RunContext:
    """One run's fixed inputs: the cell and seed, the processes, the signal watch, paths and
    the live-progress outputs (heartbeat file, TensorBoard)."""

    cell: Cell
    seed: int
    accelerator: Accelerator
    signals: DeferredSignals
    checkpoint_dir: Path | None = None
    progress: bool = True
    heartbeat: Heartbeat | None = None  # set once the start step is known
    tracker: TrainLog | None = None

    @property
    def total(self) -> int:
        return self.cell.train.iters

    @property
    def show(self) -> bool:
        """Progress bars and messages: on the main process only."""
        return self.progress and self.accelerator.is_main_process

    def say(self, text: str) -> None:
        """Print on the main process."""
        if self.accelerator.is_main_process:
            print(text, flush=True)

    def beat(self, step: int, phase: str = "training", force: bool = False) -> None:
        """Update the heartbeat file (when due, or `force`)."""
        if self.heartbeat is not None:
            self.heartbeat.beat(step, phase, force)

    @property
    def logging(self) -> bool:
        """Whether the run writes TensorBoard scalars (skip computing them otherwise)."""
        return self.tracker is not None and self.tracker.active

    def log(self, values: dict[str, float], step: int) -> None:
        """TensorBoard scalars at `step` (when the run has a log folder)."""
        if self.logging:
            self.tracker.log(values, step)

    def agreed_signal(self) -> int:
        """The signal any process received (0 if none), the same on every process."""
        signals, accelerator = self.signals, self.accelerator
        received = signals.received or 0
        if accelerator.num_processes > 1:
            flag = torch.tensor([received], device=accelerator.device)
            received = int(accelerator.reduce(flag, reduction="max").item())
        if received and signals.received is None:
            signals.received = received
        return received

    def stop_point(self, step: int, saved: bool, during: str = "", signum: int | None = None
                   ) -> None:
        """A safe point: if any process got a signal (`signum`, when the caller has already
        agreed on it), hand it on: submitit's handler, or `Interrupted` in a plain run."""
        signum = self.agreed_signal() if signum is None else signum
        if signum:
            self.signals.forward(interrupted_message(signum, step, self.total,
                                                     self.checkpoint_dir, saved, during))


@dataclass
class TrainState:
    """The model and optimizer (prepared by Accelerate) and the progress of training."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    params: dict[str, int]
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    train_s: float = 0.0
    step_times: list[float] = field(default_factory=list)
    resumed_from: int = 0
    health: HealthMonitor | None = None  # prototype heads: assignment counts (train/telemetry.py)
    pretrained: dict[str, Any] = field(default_factory=dict)  # the backbone file loaded, its sha256

    def extra(self, accelerator: Accelerator | None = None) -> dict[str, Any]:
        """What a checkpoint keeps besides model, optimizer and RNG states (every process calls
        it: the prototype-health counts are summed over processes)."""
        extra = {"history": self.history, "train_s": self.train_s, "step_times": self.step_times}
        if self.health is not None and self.health.active:
            extra["health_counts"] = self.health.to_state(accelerator)
        return extra

    def restore(self, step: int, extra: dict[str, Any], main_process: bool = True) -> None:
        """Take back what `extra` saved at `step` (health counts: HealthMonitor.restore)."""
        self.step = self.resumed_from = step
        self.history, self.train_s = extra["history"], extra["train_s"]
        self.step_times = extra["step_times"]
        if self.health is not None:
            self.health.restore(extra.get("health_counts"), main_process)


# ----------------------------------------------------------------------------------------- resuming


def resume(ctx: RunContext, state: TrainState) -> Path | None:
    """Load the newest valid checkpoint (damaged ones are skipped with a warning) into `state`
    and return its folder; None when there is none (the run starts at step 0)."""
    if ctx.checkpoint_dir is None:
        return None
    found = latest_valid(ctx.checkpoint_dir)
    if found is None:
        return None
    folder, meta = found
    load(ctx.accelerator, folder)
    state.restore(meta["step"], meta["extra"], ctx.accelerator.is_main_process)
    ctx.say(f"resuming from {folder}")
    return folder


def save_state(ctx: RunContext, state: TrainState) -> None:
    """Checkpoint `state` at its step (all processes take part)."""
    assert ctx.checkpoint_dir is not None
    save(ctx.accelerator, ctx.checkpoint_dir, state.step, state.extra(ctx.accelerator))


# ------------------------------------------------------------------------------------------ signals


__all__ = ["SIGNALS", "DeferredSignals", "Interrupted", "Stopped", "interrupted_message",
           "stop_now"]

# SIGNALS, Interrupted, Stopped and stop_now live in benchmark/stops.py (the command line's
# bottom layer, which must not import this package) and are used here under the same names.

# Handlers that mean "nobody else wants this signal": then the engine raises `Interrupted`.
# Python's own SIGINT handler would raise KeyboardInterrupt (a traceback, no message), and
# `stop_now` is run_all.py's own, which the engine's one-line message replaces.
_NO_HANDLER = (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler, stop_now, None)


def interrupted_message(signum: int, step: int, total: int, checkpoint_dir: Path | None,
                        saved: bool, during: str = "") -> str:
    """One line for the user: which signal, where, and what running again does."""
    name = signal.Signals(signum).name
    where = f"interrupted by {name} at step {step} of {total}" + (f" {during}" if during else "")
    if checkpoint_dir is None:
        return f"{where}; no checkpoint folder was given: running again starts over"
    if not saved:
        return f"{where}; nothing to save yet: run the same command again to start it"
    return f"{where}; checkpoint saved in {checkpoint_dir}: run the same command again to resume"


class DeferredSignals:
    """Context manager: note SIGUSR2/SIGTERM/SIGINT during a run, act on them at safe points."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "DeferredSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def forward(self, message: str = "") -> None:
        """Give the noted signal to the previous handler (after the checkpoint is saved); with
        none, raise `Interrupted(message)`."""
        signum, self.received = self.received, None
        if signum is None:
            return
        previous = self._previous.get(signum)
        if previous in _NO_HANDLER or not callable(previous):
            raise Interrupted(message or f"interrupted by {signal.Signals(signum).name}")
        self.__exit__()
        previous(signum, None)  # submitit: checkpoint() + requeue + exit; or bypass
        self.__enter__()  # handler returned (e.g. submitit's SIGTERM bypass): keep going
