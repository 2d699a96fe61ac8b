"""A real one-node SLURM for the tests marked `slurm`, started once per session by slurm.sh.

The fixture installs SLURM when missing (root + apt-get), starts it with accounting (`sacct`),
points this process's SLURM_CONF (and PATH, for the sacct stand-in) at it, and stops the daemons
it started when the session ends. Where SLURM cannot start, the tests skip and the failing step
with its output is printed in the summary; PROTOSEG_REQUIRE_SLURM=1 turns that skip into an error.
Deselect these tests with `pytest -m "not slurm"`.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SLURM_SH = Path(__file__).with_name("slurm.sh")
START_TIMEOUT_S = 900  # a first start installs the Debian packages
_NOT_STARTED: list[str] = []  # why the local SLURM did not start, for the terminal summary


@dataclass(frozen=True)
class LocalSlurm:
    """The running instance: its config, how `sacct` is answered, and its log folder."""

    conf: Path
    accounting: str  # slurmdbd | shim
    logs: Path
    start_s: float


def _parse(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _give_up(reason: str) -> None:
    """Skip, or fail where PROTOSEG_REQUIRE_SLURM=1 (CI)."""
    if os.environ.get("PROTOSEG_REQUIRE_SLURM") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start (or join) the local SLURM; the environment of this process points at it."""
    if _NOT_STARTED:
        _give_up(_NOT_STARTED[0])
    owner = str(os.getpid())
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(["bash", str(SLURM_SH), "start", "--owner", owner],
                              capture_output=True, text=True, timeout=START_TIMEOUT_S)
        failure = None if proc.returncode == 0 else _tail(proc.stderr or proc.stdout)
    except (OSError, subprocess.TimeoutExpired) as err:
        failure = f"slurm.sh start: {type(err).__name__}: {err}"
    if failure:
        _NOT_STARTED.append(f"local SLURM did not start:\n{failure}")
        _give_up(_NOT_STARTED[0])
    env = _parse(proc.stdout)
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    if env.get("PATH_PREFIX"):
        os.environ["PATH"] = env["PATH_PREFIX"] + os.pathsep + os.environ["PATH"]
    conf = Path(env["SLURM_CONF"])
    try:
        yield LocalSlurm(conf=conf, accounting=env.get("ACCOUNTING", "?"),
                         logs=conf.parent.parent / "log", start_s=time.perf_counter() - t0)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        subprocess.run(["bash", str(SLURM_SH), "stop", "--owner", owner],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "SLURM_CONF": str(conf)})


def pytest_terminal_summary(terminalreporter) -> None:
    """Say why the SLURM tests were skipped (the failing step and its output)."""
    for reason in _NOT_STARTED[:1]:
        terminalreporter.write_sep("-", "SLURM tests: the local SLURM did not start")
        terminalreporter.write_line(reason)
