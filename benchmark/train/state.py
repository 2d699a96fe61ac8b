"""What a run carries from stage to stage: `RunContext` (fixed for the run) and `TrainState`
(what training changes, what a checkpoint keeps besides the tensors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from benchmark.config import Cell
from benchmark.train.health import HealthMonitor
from benchmark.train.interrupts import DeferredSignals, interrupted_message
from benchmark.train.progress import Heartbeat, TrainLog


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
    health: HealthMonitor | None = None  # prototype heads: assignment counts (train/health.py)
    pretrained: dict[str, Any] = field(default_factory=dict)  # the backbone file loaded, its sha256

    def extra(self) -> dict[str, Any]:
        """What a checkpoint keeps besides model, optimizer and RNG states."""
        extra = {"history": self.history, "train_s": self.train_s, "step_times": self.step_times}
        if self.health is not None and self.health.active:
            extra["health_counts"] = self.health.to_state()
        return extra

    def restore(self, step: int, extra: dict[str, Any]) -> None:
        """Take back what `extra` saved at `step`."""
        self.step = self.resumed_from = step
        self.history, self.train_s = extra["history"], extra["train_s"]
        self.step_times = extra["step_times"]
        if self.health is not None:
            self.health.restore(extra.get("health_counts"))
