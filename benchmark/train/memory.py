"""Peak memory of one run: the GPU allocator's peak, or the process's peak resident set on the CPU.

On Linux the CPU figure is VmHWM after resetting it at the start of the run (writing "5" to
/proc/self/clear_refs), so runs sharing one process (the inline executor) do not inherit each
other's peaks; elsewhere it falls back to ru_maxrss, the peak over the process's whole life.
"""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path
from typing import Any

import torch

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


def peak_record(device: torch.device, was_reset: bool) -> dict[str, Any]:
    """The record's `memory` entry, saying what the number means."""
    if device.type == "cuda":
        return {"device": "cuda", "peak_bytes": peak_bytes(device),
                "note": "peak allocated by torch on the GPU during the run"}
    note = ("peak resident memory of the process during the run (CPU; DataLoader workers "
            "not included)" if was_reset else
            "peak resident memory of the whole process so far (CPU; could not be reset)")
    return {"device": "cpu", "peak_bytes": peak_bytes(device), "note": note}
