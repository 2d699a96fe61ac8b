"""Per-run peak memory: runs sharing one process must not inherit each other's CPU peaks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark.train.telemetry import peak_bytes, peak_record, reset_peak

CPU = torch.device("cpu")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_cpu_peak_restarts_after_reset() -> None:
    assert reset_peak(CPU)
    big = torch.ones(64 * 2**20)  # 256 MiB, written, so resident
    high = peak_bytes(CPU)
    del big  # freed to the OS (far above malloc's mmap threshold)
    assert reset_peak(CPU)
    low = peak_bytes(CPU)
    assert high - low > 200 * 2**20
    record = peak_record(CPU, was_reset=True)
    assert record["device"] == "cpu" and record["peak_bytes"] < high
    assert "during the run" in record["note"]
    assert "whole process" in peak_record(CPU, was_reset=False)["note"]
