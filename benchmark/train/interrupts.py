"""Deferring SIGUSR2 / SIGTERM / SIGINT to the next safe point of a run.

A signal handler runs between two Python bytecodes, possibly halfway through an optimizer step,
so saving state there could capture a half-updated model. Instead the signal is only noted; the
engine checks at each step boundary and between evaluation batches, saves a consistent
checkpoint (the final one, step == total, exists before evaluation starts), then hands the signal
to the handler that was installed before (submitit's checkpoint-and-requeue under SLURM or the
local executor). With no previous handler (a plain run, or Ctrl-C) it raises `Interrupted`.
The engine installs the handlers first thing, so a signal during start-up is not lost either.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from benchmark.stops import SIGNALS, Interrupted, Stopped, stop_now

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
