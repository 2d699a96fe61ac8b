"""Per-run peak memory: runs sharing one process must not inherit each other's CPU peaks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.train.telemetry import peak_record

CPU = torch.device("cpu")

# Run in a fresh interpreter: in a long test session the allocator may serve 256 MiB from
# pages an earlier test left resident, so the resident peak would not move at all.
_PEAK_PROBE = """
import torch
from benchmark.train.telemetry import peak_bytes, reset_peak
cpu = torch.device("cpu")
assert reset_peak(cpu)
big = torch.ones(64 * 2**20)  # 256 MiB, written, so resident
high = peak_bytes(cpu)
del big  # freed to the OS (far above malloc's mmap threshold)
assert reset_peak(cpu)
print(high, peak_bytes(cpu))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_cpu_peak_restarts_after_reset() -> None:
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", _PEAK_PROBE], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    high, low = (int(v) for v in done.stdout.split())
    assert high - low > 200 * 2**20


def test_peak_record_says_what_the_number_means() -> None:
    record = peak_record(CPU, was_reset=True)
    assert record.device == "cpu" and record.peak_bytes > 0
    assert "during the run" in record.note
    assert "whole process" in peak_record(CPU, was_reset=False).note
