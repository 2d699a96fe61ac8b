"""A signal anywhere in run_all.py outside a run's engine (start-up, planning, tables, status)
ends with one line and exit code 3, never a traceback; a closed pipe (`| head`) ends quietly,
exit 141 as a Unix tool that SIGPIPE ended (issue 24, item 2). Signals inside a run:
tests/faults/test_signals.py.

Each signal is raised by the command's own code (a hook put on one of its functions by a small
driver), never after a delay, so the tests do not depend on the machine's speed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = """
import importlib, runpy, signal, sys
target, signame, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
module, name = target.rsplit(".", 1)
module = importlib.import_module(module)
real = getattr(module, name)

def hooked(*args, **kwargs):
    if name == "atomic_write":  # the signal arrives halfway through writing a table
        def halfway(f, data=args[1]):
            f.write(data.encode() if isinstance(data, str) else b"")
            signal.raise_signal(getattr(signal, signame))
        return real(args[0], halfway)
    signal.raise_signal(getattr(signal, signame))
    return real(*args, **kwargs)

setattr(module, name, hooked)
sys.argv = ["run_all.py", *argv]
runpy.run_path("run_all.py", run_name="__main__")
"""


def signalled(hook: str, signame: str, *args: str) -> subprocess.CompletedProcess:
    """run_all.py ARGS with `signame` raised when `hook` (module.function) is first called."""
    return subprocess.run([sys.executable, "-c", DRIVER, hook, signame, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def assert_one_line_exit_3(proc: subprocess.CompletedProcess, *expected: str) -> None:
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize("hook,signame", [
    ("benchmark.cli.load_grids", "SIGINT"),  # start-up: arguments and grids
    ("benchmark.cli.pending_runs", "SIGTERM"),  # planning, before any run
])
def test_signal_at_start_up_is_one_line(hook, signame, results, tiny_smoke) -> None:
    proc = signalled(hook, signame, "--grid", "smoke", "--results", str(results), *tiny_smoke)
    assert_one_line_exit_3(proc, f"interrupted by {signame}; no run was in progress",
                           "run the same command again")
    assert not (results / "runs").exists()


def test_ctrl_c_before_the_engine_takes_the_signal(results, tiny_smoke) -> None:
    """Inside a run, before the engine's handlers are in (the accelerator is made first)."""
    proc = signalled("benchmark.train.engine.make_accelerator", "SIGINT", "--grid", "smoke",
                     "--results", str(results), *tiny_smoke)
    assert_one_line_exit_3(proc, "interrupted by SIGINT; run the same command again to resume")
    assert "[2/5]" not in proc.stdout and not list(results.rglob("seed*.json"))


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_signal_while_writing_tables(signame, smoke_reference, results, tiny_smoke) -> None:
    shutil.copytree(smoke_reference, results)
    shutil.rmtree(results / "tables")
    proc = signalled("benchmark.report.render.atomic_write", signame, "--grid", "smoke",
                     "--results", str(results), "--tables-only", *tiny_smoke)
    assert_one_line_exit_3(proc, f"interrupted by {signame}")
    assert not [p for p in results.rglob("*.tmp")], "the half-written table's temp file stays"


def test_signal_during_status(smoke_reference, results, tiny_smoke) -> None:
    shutil.copytree(smoke_reference, results)
    proc = signalled("benchmark.cli.print_status", "SIGINT", "--grid", "smoke", "--results",
                     str(results), "--status", *tiny_smoke)
    assert_one_line_exit_3(proc, "interrupted by SIGINT")


@pytest.mark.parametrize("mode", ["--dry-run", "--status"])
def test_closed_pipe_ends_quietly(mode, results, tiny_smoke) -> None:
    """The reader is gone before the first line is written (the end of `| head -2`)."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "run_all.py", "--grid", "smoke", "--results",
                               str(results), mode, *tiny_smoke], cwd=ROOT, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr[-3000:]


def test_pipe_into_head(results, tiny_smoke) -> None:
    proc = subprocess.run(f"{sys.executable} run_all.py --grid smoke --results {results} "
                          f"--dry-run {' '.join(tiny_smoke)} | head -2", shell=True, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert len(proc.stdout.splitlines()) == 2 and proc.stderr == "", proc.stderr[-3000:]
