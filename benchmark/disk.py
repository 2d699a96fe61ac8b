"""A full disk, said once and plainly: which device, how much room the write needed.

Writers fail on a full disk in their own words (torch's `inline_container.cc: unexpected pos`,
a TensorBoard thread's traceback, ENOSPC from the kernel). Every place that writes results
(`store.atomic_write`, training checkpoints, TensorBoard events, the heartbeat) turns such a
failure into one `DiskFull` whose message names the device, its mount point, the space free and
the space needed; run_all.py then stops the grid with that line (no further run on that disk).
Torch-free and stdlib-only: the store and the command line import it.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path
from typing import Any

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
NEARLY_FULL = 1 << 20  # bytes: less free than this after a failed write means the disk filled


class DiskFull(OSError):
    """No room left for a write; the message is one line naming the device and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def human_size(n: float) -> str:
    """Bytes as GB (from 0.1 GB) or MB, for one-line messages."""
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def existing_ancestor(path: Path) -> Path:
    """`path` itself or its nearest ancestor that exists (where a new folder would be made)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def device_of(path: Path | str) -> tuple[str, str]:
    """(device, mount point) holding `path`: the longest mount point above it in
    /proc/self/mounts; ('unknown device', '/') where that cannot be read."""
    real = os.path.realpath(existing_ancestor(Path(path)))
    best = ("unknown device", "/")
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            mounts = [line.split()[:2] for line in f if len(line.split()) >= 2]
    except OSError:
        return best
    for device, mount in mounts:
        mount = mount.replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[1]):
            best = (device, mount)
    return best


def free_bytes(path: Path | str) -> int | None:
    try:
        return shutil.disk_usage(existing_ancestor(Path(path))).free
    except OSError:
        return None


def disk_full(path: Path | str, what: str, need: int | None = None) -> DiskFull:
    """The error for a write of `what` to `path` that found no room."""
    device, mount = device_of(path)
    free = free_bytes(path)
    room = f"{human_size(free)} free" if free is not None else "no room"
    needed = f", about {human_size(need)} needed" if need else ""
    return DiskFull(f"no space left on device {device} (mounted at {mount}) for {what} {path}: "
                    f"{room}{needed}; free some space or point --results at another disk; "
                    f"the last good checkpoint is kept and the same command resumes")


def _errnos(err: BaseException | None) -> list[int]:
    """Error numbers of `err` and the exceptions it was raised from."""
    seen: list[int] = []
    while err is not None and len(seen) < 16:
        if isinstance(err, OSError) and err.errno is not None:
            seen.append(err.errno)
        err = err.__cause__ or err.__context__
    return seen


def is_full(err: BaseException, path: Path | str, need: int | None = None) -> bool:
    """Whether `err`, raised while writing under `path`, means the disk is full: ENOSPC or
    EDQUOT in its chain, or (writers that lose the errno, like torch's zip writer) less room
    left than the write needed."""
    if isinstance(err, DiskFull) or any(e in FULL_ERRNOS for e in _errnos(err)):
        return True
    if not isinstance(err, (OSError, RuntimeError, ValueError)):
        return False
    free = free_bytes(path)
    return free is not None and free < max(need or 0, NEARLY_FULL)


def as_disk_full(err: BaseException, path: Path | str, what: str,
                 need: int | None = None) -> BaseException:
    """`err` as a DiskFull when it means a full disk, else `err` itself."""
    if isinstance(err, DiskFull):
        return err
    return disk_full(path, what, need) if is_full(err, path, need) else err


_hook_lock = threading.Lock()
_hook_installed = False


def quiet_full_disk_in_threads() -> None:
    """Background writers (TensorBoard's event thread) that die on a full disk print no
    traceback: the main thread meets the same error at its next write and says it once."""
    global _hook_installed
    with _hook_lock:
        if _hook_installed:
            return
        previous = threading.excepthook

        def hook(args: Any) -> None:
            if args.exc_value is not None and any(e in FULL_ERRNOS
                                                  for e in _errnos(args.exc_value)):
                return
            previous(args)

        threading.excepthook = hook
        _hook_installed = True
