"""How run_all.py ends when something outside it stops it: a signal, a closed pipe, a full disk.

A signal (Ctrl-C, SIGTERM, SIGUSR2) anywhere outside a run's engine (start-up, planning, the dry
run, `--status`, tables and reports) ends the command with one line and exit code 3; inside a
run the engine checkpoints first (benchmark/train/checkpoint.py) and says so in its own line.
A closed pipe (`run_all.py --dry-run | head -2`) ends quietly, as Unix tools do (exit 141,
128 + SIGPIPE, no message). A full disk ends with the one line of `benchmark.disk.DiskFull`.
Torch-free: the handlers are in before the command's heavier imports.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from typing import Any, Callable

from types import FrameType

from benchmark.disk import DiskFull

SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)  # what the engine defers too
INTERRUPTED = 3  # exit code: stopped by a signal (a run's checkpoint saved first)
DISK_FULL = 1  # exit code: the grid stopped on a full disk (like a failed run)
CLOSED_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a tool that SIGPIPE ended


class Interrupted(RuntimeError):
    """A run stopped on a signal after saving a checkpoint; rerunning resumes it (raised by
    the engine, benchmark/train/checkpoint.py)."""


class Stopped(KeyboardInterrupt):
    """A signal outside a run (start-up, planning, tables): `stop_now` raises it at once, so the
    command ends with one line instead of a traceback or a silent death."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_now(signum: int, frame: FrameType | None) -> None:
    """Signal handler of run_all.py outside the engine: raise `Stopped` where the program is
    (atomic writes remove their temp file on the way out). The engine takes it for "no
    handler" and ends a run with its own checkpointed line instead."""
    raise Stopped(signum)


def stopped_message(err: BaseException) -> str:
    """The one line for a signal that arrived outside a run."""
    name = err.args[0] if isinstance(err, Stopped) else "SIGINT"
    return (f"interrupted by {name}; no run was in progress, nothing is lost: run the same "
            f"command again to go on")


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush into the closed pipe
    prints nothing (Python's documented recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _install() -> dict[int, Any]:
    """`stop_now` for SIGINT/SIGTERM/SIGUSR2 (main thread only); returns what was there."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in SIGNALS:
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, stop_now)
    return previous


def run_guarded(main: str | Callable[[list[str] | None], int],
                argv: list[str] | None = None) -> int:
    """Import (when `main` is a module name, its `main`) and call the command's main function;
    a signal, a closed pipe or a full disk ends it as the module docstring says."""
    previous = _install()
    try:
        entry = importlib.import_module(main).main if isinstance(main, str) else main
        code = entry(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return CLOSED_PIPE
    except Interrupted as err:  # a run's own line (checkpoint saved), if not said already
        print(err, file=sys.stderr)
        return INTERRUPTED
    except KeyboardInterrupt as err:
        print(stopped_message(err), file=sys.stderr)
        return INTERRUPTED
    except DiskFull as err:
        print(f"error: {err}", file=sys.stderr)
        return DISK_FULL
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
