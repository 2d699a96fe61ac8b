"""One run is done by one process (benchmark/launch/locks.py): two launches on the same results
folder train each run once, the second saying which runs it skipped; a killed owner never leaves
a stale lock; `--status` shows a held run as running, with its owner and heartbeat progress.
Live SLURM jobs are not submitted twice: tests/benchmark/test_cli.py::
test_runs_with_a_live_job_are_not_submitted_twice.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmark.launch.locks import RunLock, holder
from benchmark.store import ResultsLayout

ROOT = Path(__file__).resolve().parents[2]
REDO = ("Softmax", "Pixel-query")  # the grid's first two runs: their records are removed


def _records(results: Path) -> dict[str, Path]:
    return {json.loads(p.read_text())["cell"]["row"]: p
            for p in (results / "runs" / "smoke").glob("*/seed0.json")}


def test_a_killed_owner_leaves_no_stale_lock(tmp_path) -> None:
    path = tmp_path / "locks" / "seed0.lock"
    code = ("import sys, time; from benchmark.launch.locks import RunLock; "
            f"assert RunLock({str(path)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert holder(path) == {"host": socket.gethostname(), "pid": child.pid, "group": "",
                                "since": holder(path)["since"]}
        assert not RunLock(path).acquire(retry_s=0.1), "a held lock is exclusive"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert holder(path) is None
    with RunLock(path) as lock:
        assert lock.acquire(retry_s=0)
        assert holder(path)["pid"] == os.getpid()
    assert not path.exists() and holder(path) is None, "a released lock removes its file"


def test_two_launches_train_each_run_once(smoke_reference, tmp_path, tiny_smoke) -> None:
    """The first launch is paused (SIGSTOP) while it trains the first run, so the second
    meets that run in progress whatever the machine's speed; then both finish."""
    results = tmp_path / "results"
    shutil.copytree(smoke_reference, results)
    reference = {row: json.loads(p.read_text()) for row, p in _records(results).items()}
    for row in REDO:
        _records(results)[row].unlink()
    first_lock = ResultsLayout(results).lock("smoke", reference[REDO[0]]["cell_key"], 0)
    cmd = [sys.executable, str(ROOT / "run_all.py"), "--grid", "smoke", "--results",
           str(results), *tiny_smoke]
    a = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while holder(first_lock) is None and a.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    a.send_signal(signal.SIGSTOP)  # holding the first run's lock
    try:
        b = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        a.send_signal(signal.SIGCONT)
    out_a, err_a = a.communicate(timeout=600)
    assert a.returncode == 0 and b.returncode == 0, (err_a[-2000:], b.stderr[-2000:])
    assert (f"skipped {REDO[0]} seed 0: in progress in another process "
            f"(host {socket.gethostname()}, pid {a.pid}); see --status") in b.stdout, b.stdout
    assert f"skipped {REDO[1]} seed 0: finished by another process meanwhile" in out_a, out_a
    both = out_a + b.stdout
    for row in REDO:  # trained exactly once, by one of the two
        assert both.count(f"training {row} seed 0:") == 1, both
    assert sum(ln.strip().startswith("skipped ") for ln in both.splitlines()) == len(REDO)
    for row, record in _records(results).items():  # and exactly as an uninterrupted run
        done = json.loads(record.read_text())
        assert done["weights_sha256"] == reference[row]["weights_sha256"], row
        assert done["metrics"] == reference[row]["metrics"], row


def test_status_shows_running_runs_with_owner_and_progress(results, run_all, tiny_smoke) -> None:
    """A run held by a live process (here this test) is `running`, with the heartbeat's step,
    images per second and time left; the other runs are not."""
    from benchmark.cli import load_grid

    _, cells, _ = load_grid("smoke", [a for a in tiny_smoke if "=" in a])
    layout = ResultsLayout(results)
    key = cells[1].key
    beat = {"step": 3, "total": 6, "phase": "training", "images_per_s": 12.5, "eta_s": 100,
            "updated": dt.datetime.now(dt.timezone.utc).isoformat()}  # train/telemetry.py's
    heartbeat = layout.heartbeat("smoke", key, 0)
    heartbeat.parent.mkdir(parents=True)
    heartbeat.write_text(json.dumps(beat))
    with RunLock(layout.lock("smoke", key, 0)) as lock:
        assert lock.acquire()
        proc = run_all("--grid", "smoke", "--status", "--results", str(results), *tiny_smoke)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = {ln.split(" seed ")[0].strip(): ln for ln in proc.stdout.splitlines() if " seed " in ln}
    line = lines[cells[1].row]
    assert " running " in line, line
    assert (f"host {socket.gethostname()}, pid {os.getpid()}; step 3/6, 12.5 img/s, "
            f"1m40s left, updated ") in line, line
    assert all(" running " not in ln for row, ln in lines.items() if row != cells[1].row)


def test_ranks_above_0_follow_their_rank_0(tmp_path, monkeypatch) -> None:
    """One process per GPU: rank 0 holds the lock for its group; the other ranks go on when
    their own rank 0 holds it and skip when another launch's does (no half-joined group)."""
    import types

    from benchmark.launch.locks import claim

    run = types.SimpleNamespace(lock_path=tmp_path / "seed0.lock", done=False)
    for name, value in (("WORLD_SIZE", "2"), ("MASTER_ADDR", "node1"), ("MASTER_PORT", "29500"),
                        ("RANK", "0")):
        monkeypatch.setenv(name, value)
    lock, why = claim(run)
    assert lock is not None and lock.acquired and why == ""
    assert holder(run.lock_path)["group"] == "node1:29500"
    monkeypatch.setenv("RANK", "1")
    follower, why = claim(run)
    assert follower is not None and follower.acquired and why == ""
    monkeypatch.setenv("MASTER_PORT", "29501")  # a rank of another launch's group
    other, why = claim(run)
    assert other is None and why.startswith("in progress in another process (host ")
    follower.release()
    assert holder(run.lock_path) is not None, "a follower's release leaves rank 0's lock"
    lock.release()
    assert holder(run.lock_path) is None


def test_a_follower_does_not_mistake_the_lock_file_rank_0_is_rewriting(tmp_path,
                                                                       monkeypatch) -> None:
    """Rank 0 writes its name into the lock file just after taking it; a rank that reads in
    between sees the previous holder's name (or nothing), and must look again before it
    decides the run is another launch's (it skipped, leaving its rank 0 waiting for it)."""
    import types

    from benchmark.launch import locks

    for name, value in (("WORLD_SIZE", "2"), ("MASTER_ADDR", "node1"), ("MASTER_PORT", "29500"),
                        ("RANK", "1")):
        monkeypatch.setenv(name, value)
    run = types.SimpleNamespace(lock_path=tmp_path / "seed0.lock", done=False)
    stale, ours = {"host": "old", "pid": 1, "group": "node9:1"}, {"group": "node1:29500"}
    reads = iter([stale, {}, ours])
    monkeypatch.setattr(locks, "holder", lambda path: next(reads))
    monkeypatch.setattr(locks.time, "sleep", lambda s: None)
    follower, why = locks.claim(run)
    assert follower is not None and why == ""
    reads = iter([stale, stale])  # read twice: another launch's rank 0 holds it
    skipped, why = locks.claim(run)
    assert skipped is None and why.startswith("in progress in another process (host old")


def test_a_lock_that_cannot_be_taken_skips_the_run_with_one_line(tmp_path) -> None:
    import types

    from benchmark.launch.locks import claim

    (tmp_path / "locks").write_text("a file where the lock folder goes")
    run = types.SimpleNamespace(lock_path=tmp_path / "locks" / "seed0.lock", done=False)
    lock, why = claim(run)
    assert lock is None
    assert why.startswith(f"cannot take its lock {run.lock_path} (") and "\n" not in why
    assert why.endswith("make the results folder writable and run the same command again")


def test_progress_lines_from_heartbeats() -> None:
    from benchmark.launch.status import progress_text

    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    beat = {"step": 800, "total": 800, "phase": "evaluating", "images_per_s": 35.25,
            "eta_s": None, "updated": "2026-01-01T11:58:30+00:00"}
    assert progress_text(beat, now) == "evaluating, step 800/800, 35.2 img/s, updated 1m30s ago"
    beat = {"step": 10, "total": 5000, "img_per_s": 2.0, "eta_s": 7465.0,
            "updated": "2026-01-01T12:00:00+00:00"}
    assert progress_text(beat, now) == "step 10/5000, 2.0 img/s, 2h04m left, updated 0s ago"
    assert progress_text(None, now) == "starting (no heartbeat yet)"


def test_runs_held_by_another_launch_are_not_submitted(results, tiny_smoke, capsys) -> None:
    from benchmark.cli import load_grid
    from benchmark.launch.runs import plan
    from benchmark.launch.locks import skip_held

    _, cells, _ = load_grid("smoke", [a for a in tiny_smoke if "=" in a])
    runs = plan(cells, [0], ResultsLayout(results))
    with RunLock(runs[2].lock_path) as lock:
        assert lock.acquire()
        assert skip_held(runs) == runs[:2] + runs[3:]
    out = capsys.readouterr().out
    assert out == (f"  skipped {runs[2].cell.row} seed 0: in progress in another process "
                   f"(host {socket.gethostname()}, pid {os.getpid()}); see --status\n")
    assert skip_held(runs) == runs
