"""One run is done by one process: a per-run lock file under the results folder.

The lock is `fcntl.flock` on `ResultsLayout.lock(grid, key, seed)`; the kernel drops it when
its process dies, so a crash or `kill -9` never leaves a stale lock. The file holds the owner's
host and pid (what `--status` prints). A second launch on the same results folder skips the runs
another process holds, and runs that another process finished meanwhile. In a multi-process
run (one process per GPU), rank 0 takes the lock and the other ranks follow its decision.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from benchmark.launch.runs import Run

RETRY_S = 1.0  # a `--status` reader holds a lock for microseconds: retry this long before skipping
FOLLOW_S = 300.0  # how long ranks > 0 wait for rank 0 to take (or skip) the lock
FIX = "make the results folder writable and run the same command again"


def _group() -> str:
    """What identifies the processes of one multi-process run ('' for a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ""
    return f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"


class RunLock:
    """An exclusive, non-blocking lock on one file; `acquired` says whether it was taken."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.fd: int | None = None

    @property
    def acquired(self) -> bool:
        return self.fd is not None

    def acquire(self, retry_s: float = RETRY_S) -> bool:
        """Take the lock (False when another process holds it) and write host, pid, start."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + retry_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
                continue
            try:  # the previous owner may have removed the file between our open and flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "group": _group(),
                 "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner).encode())
        self.fd = fd
        return True

    def release(self) -> None:
        """Remove the file and drop the lock (removal first, while still held: see acquire)."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Follower(RunLock):
    """What ranks > 0 hold: nothing (rank 0 holds the file lock for the whole group)."""

    @property
    def acquired(self) -> bool:
        return True


def holder(path: Path | str) -> dict[str, Any] | None:
    """Who holds the lock at `path` ({'host', 'pid', 'since'}), or None when no live process
    does (a lock left by a killed process is free)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                owner = {}
            return owner if isinstance(owner, dict) else {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe(owner: dict[str, Any]) -> str:
    return f"host {owner.get('host', '?')}, pid {owner.get('pid', '?')}"


def claim(run: Run, force: bool = False) -> tuple[RunLock | None, str]:
    """Lock `run` for this process: (the lock, '') or (None, why
    it is skipped). Without `force`, a run another process finished meanwhile is skipped too."""
    path = run.lock_path  # ResultsLayout.lock(grid, key, seed)
    if int(os.environ.get("RANK", "0")) > 0:
        return _follow(run, path, force)
    lock = RunLock(path)
    try:
        acquired = lock.acquire()
    except OSError as err:  # the folder turned unwritable after the checks before compute
        return None, f"cannot take its lock {path} ({err.strerror or err}); {FIX}"
    if not acquired:
        owner = holder(path) or {}
        return None, f"in progress in another process ({describe(owner)}); see --status"
    if not force and run.done:
        lock.release()
        return None, "finished by another process meanwhile"
    return lock, ""


def _follow(run: Run, path: Path, force: bool = False) -> tuple[RunLock | None, str]:
    """Ranks > 0: go on when rank 0 of this group holds the lock, skip when another does (or,
    without `force`, when the run is done: a forced rerun's old record is still there)."""
    deadline = time.monotonic() + FOLLOW_S
    other = None  # another holder must be read twice: rank 0 writes its name just after flock
    while time.monotonic() < deadline:
        owner = holder(path)
        if owner is not None and owner.get("group") == _group():
            return _Follower(path), ""
        if owner is not None and owner == other:
            return None, f"in progress in another process ({describe(owner)})"
        other = owner
        if not force and run.done:
            return None, "finished by another process meanwhile"
        time.sleep(0.2)
    return _Follower(path), ""


def skip_held(runs: list[Run]) -> list[Run]:
    """The runs no live process holds, saying which are left out (submitting a job for a run
    another launch is doing would only start a job that skips it)."""
    kept = []
    for run in runs:
        owner = holder(run.lock_path)
        if owner is None:
            kept.append(run)
        else:
            print(f"  skipped {run.cell.row} seed {run.seed}: in progress in another process "
                  f"({describe(owner)}); see --status")
    return kept
