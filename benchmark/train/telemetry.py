"""What a run reports while it runs: progress bars and log lines, the heartbeat file, TensorBoard
scalars, prototype health, and peak memory."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

import datetime as dt
import torch
from accelerate import Accelerator

from benchmark.disk import DiskFull, disk_full, is_full, quiet_full_disk_in_threads
from benchmark.records import Memory
from benchmark.store import atomic_write
from methods.prototype_health import AssignmentCounts, health, pairwise_cosine


# ----------------------------------------------------------------------------------------- progress


HEARTBEAT_EVERY_S = 5.0
HEARTBEAT_ENV = "PROTOSEG_HEARTBEAT_S"  # seconds between heartbeats (tests: well below a step)


def heartbeat_interval() -> float:
    """Seconds between heartbeat writes: $PROTOSEG_HEARTBEAT_S if a positive number, else 5."""
    try:
        value = float(os.environ.get(HEARTBEAT_ENV, HEARTBEAT_EVERY_S))
    except ValueError:
        return HEARTBEAT_EVERY_S
    return value if value > 0 and math.isfinite(value) else HEARTBEAT_EVERY_S


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Heartbeat:
    """Writes `path` at most every `every_s` seconds (always when forced); a no-op without a
    path or off the main process. Throughput counts only the steps this process trained."""

    def __init__(self, path: Path | None, total: int, batch_size: int, start_step: int,
                 every_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.total, self.batch_size = path, total, batch_size
        self.start_step, self.clock = start_step, clock
        self.every_s = heartbeat_interval() if every_s is None else every_s
        self.t_start = clock()
        self.last: float | None = None
        self.started = _utc_now()

    def content(self, step: int, phase: str) -> dict[str, Any]:
        """What the file holds at `step` (`phase`: training, evaluating or finished)."""
        elapsed = self.clock() - self.t_start
        trained = step - self.start_step
        rate = trained * self.batch_size / elapsed if trained > 0 and elapsed > 0 else None
        eta = (self.total - step) * self.batch_size / rate if rate else None
        return {"step": step, "total": self.total, "phase": phase,
                "img_per_s": rate, "eta_s": eta if phase == "training" else None,
                "pid": os.getpid(), "host": socket.gethostname(),
                "started": self.started, "updated": _utc_now(), "updated_unix": time.time()}

    def beat(self, step: int, phase: str = "training", force: bool = False) -> None:
        """Rewrite the file if it is due (or `force`)."""
        if self.path is None:
            return
        now = self.clock()
        if not force and self.last is not None and now - self.last < self.every_s:
            return
        self.last = now
        try:
            atomic_write(self.path, json.dumps(self.content(step, phase)) + "\n")
        except DiskFull:  # the next checkpoint would fail too: stop at the last good one
            raise
        except OSError as err:  # progress display only: never worth failing a run for
            print(f"warning: heartbeat off: {err}", file=sys.stderr, flush=True)
            self.path = None


class TrainLog:
    """TensorBoard scalars through Accelerate's trackers, into `log_dir`; a no-op without one.

    An Accelerator made by `make_accelerator(cell, log_dir)` already carries the TensorBoard
    tracker (`log_with="tensorboard"`, `project_dir=log_dir`); one made elsewhere gets it
    added here, before `init_trackers`.
    """

    def __init__(self, accelerator: Accelerator, log_dir: Path | None) -> None:
        self.accelerator, self.active = accelerator, log_dir is not None
        self.log_dir = log_dir
        if log_dir is None:
            return
        quiet_full_disk_in_threads()  # the event thread's ENOSPC: said once, by `log`
        from accelerate.tracking import TensorBoardTracker

        if not any(str(t) == "tensorboard" or getattr(t, "name", "") == "tensorboard"
                   for t in accelerator.log_with):
            accelerator.log_with.append(TensorBoardTracker(".", log_dir))
        accelerator.init_trackers(".")

    def log(self, values: dict[str, float], step: int) -> None:
        """Scalars at `step` (main process only, as Accelerate does); a full disk under the
        logs is one DiskFull, the event writers stopped quietly."""
        if self.active:
            try:
                self.accelerator.log(values, step=step)
            except Exception as err:
                self._stop_on_full_disk(err)
                raise

    def close(self) -> None:
        """Flush and close the event files. Not `end_training()`: that would also end the
        process group, which the caller may still use."""
        if self.active:
            try:
                for tracker in self.accelerator.trackers:
                    tracker.finish()
            except Exception as err:
                self._stop_on_full_disk(err)
                raise
            self.accelerator.trackers.clear()
            self.active = False

    def _stop_on_full_disk(self, err: Exception) -> None:
        """When `err` means a full disk: close every writer (errors swallowed: the disk is
        full), stop logging and raise DiskFull naming the logs' folder."""
        if self.log_dir is None or not is_full(err, self.log_dir):
            return
        for tracker in self.accelerator.trackers:
            with contextlib.suppress(Exception):
                tracker.writer.close()
        self.accelerator.trackers.clear()
        self.active = False
        raise disk_full(self.log_dir, "TensorBoard events in") from None


def prototype_scalars(model: torch.nn.Module) -> dict[str, float]:
    """Prototype statistics for the logs (docs/method.md#momentum-update): the mean cosine
    between a class's prototypes (1 = collapsed into one); none for heads without prototypes."""
    head = getattr(model, "head", None)
    vectors = head.prototype_vectors() if head is not None else None
    if vectors is None or vectors.shape[1] < 2:
        return {}
    return {"prototypes/pairwise_cosine": float(pairwise_cosine(vectors).mean())}


# --------------------------------------------------------------------------------- prototype health


def prototype_buffer(model: torch.nn.Module) -> torch.Tensor | None:
    """The head's (C, K, D) prototypes (its `prototype_vectors` hook), or None without them."""
    head = getattr(model, "head", None)
    return head.prototype_vectors() if head is not None else None


class HealthMonitor:
    """Counts assignments of a prototype head; inactive (a no-op) for other heads."""

    def __init__(self, model: torch.nn.Module) -> None:
        protos = prototype_buffer(model)
        self.initial = protos.detach().cpu().clone() if protos is not None else None
        self.counts = AssignmentCounts.zeros(*protos.shape[:2]) if protos is not None else None
        self.carried: AssignmentCounts | None = None  # the others' counts, after a resume
        # the last step's assignments, counted at the next call: on a GPU their copy to the
        # host runs behind the training step instead of making the loop wait for it each step
        self._pending: tuple[torch.Tensor, torch.Tensor, Any] | None = None

    @property
    def active(self) -> bool:
        return self.counts is not None

    def observe(self, head_state: dict[str, torch.Tensor]) -> None:
        """Add one step's assignments (the head's training `state`); counted by the next call
        of any method (the copy from a GPU started now, without waiting)."""
        if not (self.active and "assignments" in head_state and "gumbel_disagree" in head_state):
            return
        self._count_pending()
        target = head_state["assignments"].detach()
        disagree = head_state["gumbel_disagree"].detach()
        copied = None
        if target.is_cuda:  # pinned host copies, done when the event is
            target = target.to("cpu", non_blocking=True)
            disagree = disagree.to("cpu", non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()
        else:  # a snapshot, as the copy from a GPU is: a head may reuse its buffers next step
            target, disagree = target.clone(), disagree.clone()
        self._pending = (target, disagree, copied)

    def _count_pending(self) -> None:
        if self._pending is not None:
            target, disagree, copied = self._pending
            if copied is not None:
                copied.synchronize()
            self.counts.add(target, disagree)
            self._pending = None

    def summary(self, model: torch.nn.Module) -> dict[str, float]:
        """Finite class means of the statistics so far, as `health_<name>` scalars."""
        if not self.active:
            return {}
        self._count_pending()
        stats = health(self.counts, prototype_buffer(model), self.initial)["summary"]
        return {f"health_{k}": float(v) for k, v in stats.items() if math.isfinite(float(v))}

    def final(self, model: torch.nn.Module, accelerator: Accelerator) -> dict[str, Any] | None:
        """Per-class statistics over the whole training, counts summed over processes."""
        if not self.active:
            return None
        return health(self._summed(accelerator), prototype_buffer(model), self.initial)

    def _summed(self, accelerator: Accelerator | None) -> AssignmentCounts:
        """The counts summed over processes (every process joins the reduction), with what a
        resumed main process carries for the others."""
        self._count_pending()
        counts = self.counts if self.carried is None else self.counts + self.carried
        if accelerator is not None and accelerator.num_processes > 1:
            device = accelerator.device
            counts = AssignmentCounts(
                accelerator.reduce(counts.per_prototype.to(device), "sum").cpu(),
                accelerator.reduce(counts.gumbel_disagree.to(device), "sum").cpu())
        return counts

    def to_state(self, accelerator: Accelerator | None = None) -> dict[str, Any] | None:
        """For a checkpoint (every process calls it): the counts summed over processes, and
        this process's own under "main" (the main process's file is the one kept)."""
        if not self.active:
            return None
        summed = self._summed(accelerator)  # counts the pending step first
        return {**summed.to_lists(), "main": self.counts.to_lists()}

    def restore(self, saved: dict[str, Any] | None, main_process: bool = True) -> None:
        """From a checkpoint: the main process takes back its own counts (its logged summaries
        go on as if uninterrupted) and carries the other processes' for `final`; the others
        start from zero, so that `final`'s sum counts each step once."""
        if not (self.active and saved is not None):
            return
        c, k = self.counts.per_prototype.shape
        total = AssignmentCounts.from_lists(saved)
        own = AssignmentCounts.from_lists(saved["main"]) if "main" in saved else total
        self.counts = own if main_process else AssignmentCounts.zeros(c, k)
        self.carried = total - own if main_process else None


# -------------------------------------------------------------------------------------- peak memory


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak(device: torch.device) -> bool:
    """Start a new peak; False when the CPU peak cannot be reset (then it is the process's)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_bytes(device: torch.device) -> int:
    """Bytes: allocated tensors at their peak (GPU) or peak resident set size (CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        found = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
        if found:
            return int(found.group(1)) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss * (1 if sys.platform == "darwin" else 1024))


def peak_record(device: torch.device, was_reset: bool) -> Memory:
    """The record's `memory` entry, saying what the number means."""
    if device.type == "cuda":
        return Memory(device="cuda", peak_bytes=peak_bytes(device),
                      note="peak allocated by torch on the GPU during the run")
    note = ("peak resident memory of the process during the run (CPU; DataLoader workers "
            "not included)" if was_reset else
            "peak resident memory of the whole process so far (CPU; could not be reset)")
    return Memory(device="cpu", peak_bytes=peak_bytes(device), note=note)
