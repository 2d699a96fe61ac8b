"""Shared fixtures of the fault-injection suite (tests/faults/): the tiny smoke grid, and
run_all.py in a subprocess, so exit codes and messages are the ones a user sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the smoke grid shrunk to seconds: 6 steps of 2 images of 32x32, a narrow decoder
TINY_SMOKE = ["--set", "train.iters=6", "--set", "train.batch_size=2", "--set",
              "data.train_images=4", "--set", "data.val_images=2", "--set", "data.image_size=32",
              "--set", "model.decoder_channels=16", "--set", "train.warmup_iters=0",
              "--no-progress"]


@pytest.fixture(scope="session")
def tiny_smoke() -> list[str]:
    """Arguments that make every smoke-grid run take about a second."""
    return list(TINY_SMOKE)


@pytest.fixture(scope="session")
def smoke_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder with every tiny smoke run done once, uninterrupted: what resumed and
    concurrent runs must equal bitwise, and a head start (copy it, delete the records to
    redo: only those runs train). Never change it."""
    results = tmp_path_factory.mktemp("reference") / "results"
    proc = subprocess.run([sys.executable, str(ROOT / "run_all.py"), "--grid", "smoke",
                           "--results", str(results), *TINY_SMOKE], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A fresh results folder (not created: run_all.py makes it)."""
    return tmp_path / "results"


@pytest.fixture
def run_all() -> Callable[..., subprocess.CompletedProcess]:
    """Run `run_all.py ARGS` in a subprocess from the repository root; returns the finished
    process (stdout and stderr as text)."""

    def run(*args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        return subprocess.run([sys.executable, str(ROOT / "run_all.py"), *args], cwd=ROOT,
                              env=full_env, capture_output=True, text=True, timeout=timeout)

    return run


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *expected: str) -> str:
    """The process exited with `code` and printed exactly one line to stderr, an `error:` line
    holding every `expected` text (the problem and its fix); returns that line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture
def one_line_error() -> Callable[..., str]:
    """`assert_one_line_error` as a fixture (conftest modules are not importable by name)."""
    return assert_one_line_error
