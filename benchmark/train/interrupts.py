"""Deferring SIGUSR2 / SIGTERM to the next training-step boundary.

A signal handler runs between two Python bytecodes, possibly halfway through an optimizer step,
so saving state there could capture a half-updated model. Instead the signal is only noted; the
engine checks at each step boundary, saves a consistent checkpoint, then hands the signal to the
handler that was installed before (submitit's checkpoint-and-requeue under SLURM or the local
executor). With no previous handler (a plain run) it raises `Interrupted`.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class Interrupted(RuntimeError):
    """Training stopped on a signal after saving a checkpoint; rerunning resumes it."""


class DeferredSignals:
    """Context manager: note SIGUSR2/SIGTERM while training, act on them at step boundaries."""

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

    def forward(self) -> None:
        """Give the noted signal to the previous handler (after the checkpoint is saved)."""
        signum, self.received = self.received, None
        if signum is None:
            return
        previous = self._previous.get(signum)
        self.__exit__()
        if callable(previous):
            previous(signum, None)  # submitit: checkpoint() + requeue + exit; or bypass
            self.__enter__()  # handler returned (e.g. submitit's SIGTERM bypass): keep going
            return
        raise Interrupted(f"stopped by {signal.Signals(signum).name}")
