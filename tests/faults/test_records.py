"""Damaged records (issue 15, item 2): a record that parses but lacks what its status needs, a
JSON value that is no record, a truncated file. Each is reported once (one line with its
path), counts as not done (the run is made again) and crashes no command: --status,
--dry-run, --tables-only and a run. Plus the atomic writes that already held: a writer killed
at any moment leaves the previous record whole, and its temp files are cleaned up later."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmark.cli import main
from benchmark.launch.runs import run_state
from benchmark.store import ResultsLayout, load_records, read_record

DAMAGES = {  # cell folder prefix: (what replaces its record, the problem reported)
    "softmax-": ('{"status": "done"}', "done record lacks cell_key, seed, metrics"),
    "pixel-query-": ("[]", "a JSON list, not an object"),
    "pixel-contrast-": (None, "not valid JSON (truncated?)"),  # None: the good record cut short
}


def damaged_results(reference: Path, tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """A copy of the finished tiny smoke results with three of its five records damaged."""
    results = tmp_path / "results"
    shutil.copytree(reference, results)
    paths = {}
    for prefix, (text, _) in DAMAGES.items():
        (path,) = (results / "runs" / "smoke").glob(f"{prefix}*/seed0.json")
        path.write_text(text if text is not None else path.read_text()[:200])
        paths[prefix] = path
    return results, paths


def assert_reported_once(output: str, paths: dict[str, Path]) -> None:
    """Each damaged record: exactly one line naming its path and its problem; no traceback."""
    assert "Traceback" not in output, output
    for prefix, path in paths.items():
        lines = [ln for ln in output.splitlines() if str(path) in ln and DAMAGES[prefix][1] in ln]
        assert len(lines) == 1, output


def csv_states(results: Path) -> list[str]:
    with open(results / "tables" / "smoke.csv", newline="", encoding="utf-8") as f:
        return [row["status"] for row in csv.DictReader(f)]


def test_status_dry_run_and_tables_survive_damaged_records(smoke_reference, tmp_path, capsys,
                                                           tiny_smoke) -> None:
    results, paths = damaged_results(smoke_reference, tmp_path)
    base = ["--grid", "smoke", "--results", str(results), *tiny_smoke]
    assert not any(run_state(p).done for p in paths.values())
    assert len(load_records(ResultsLayout(results), "smoke")) == 2
    capsys.readouterr()

    assert main([*base, "--status"]) == 0
    out = capsys.readouterr()
    assert_reported_once(out.out + out.err, paths)
    rows = [ln for ln in out.out.splitlines() if " seed 0 " in ln]
    assert len(rows) == 5 and sum(" damaged " in ln for ln in rows) == 3
    assert all("the run is made again" in ln for ln in rows if " damaged " in ln)
    assert len(re.findall(r"seed 0 +done ", out.out)) == 2

    assert main([*base, "--dry-run"]) == 0
    out = capsys.readouterr()
    assert_reported_once(out.out + out.err, paths)
    assert out.out.count("seed0 damaged (rerun)") == 3 and out.out.count("(done 0)") == 3

    assert main([*base, "--tables-only"]) == 0
    out = capsys.readouterr()
    assert_reported_once(out.out + out.err, paths)
    assert out.err.count("it counts as not done") == 3
    assert sorted(csv_states(results)) == ["done", "done", "pending", "pending", "pending"]


def test_a_run_remakes_only_the_damaged_records(smoke_reference, tmp_path, run_all,
                                                tiny_smoke) -> None:
    results, paths = damaged_results(smoke_reference, tmp_path)
    others = sorted(p for p in (results / "runs" / "smoke").glob("*/seed0.json")
                    if p not in paths.values())
    mtimes = [p.stat().st_mtime_ns for p in others]
    proc = run_all("--grid", "smoke", "--results", str(results), *tiny_smoke)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "5 runs, 2 done, 3 to run" in proc.stdout
    assert_reported_once(proc.stdout + proc.stderr, paths)
    assert [p.stat().st_mtime_ns for p in others] == mtimes  # no other run was made again
    for path in paths.values():
        remade = read_record(path)
        reference = read_record(smoke_reference / path.relative_to(results))
        assert remade.done and remade.weights_sha256 == reference.weights_sha256
        assert remade.metrics == reference.metrics and remade.confusion == reference.confusion
    assert csv_states(results) == ["done"] * 5


WRITER = """
import sys
from benchmark.store import Record, write_record
from record_fixtures import consistent
path, n = sys.argv[1], 0
while True:
    n += 1
    write_record(path, Record(status="done", grid="g", cell_key="k", seed=0, history=[
        {"step": s, "loss": float(n)} for s in range(20000)], **consistent(n % 90 + 1.0),
        params={}, timings={}))
    print(n, flush=True)
"""


def test_a_writer_killed_at_any_moment_leaves_a_whole_record(tmp_path) -> None:
    """kill -9 a process rewriting a large record at random moments: the record always reads
    whole (the previous or the new one); the temp files it leaves are cleaned up once stale."""
    path = tmp_path / "runs" / "g" / "k" / "seed0.json"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'tests'}"}
    for delay in (0.3, 0.45, 0.6, 0.75):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=root, env=env,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "1"  # one record written: now kill mid-loop
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        record = read_record(path)
        assert record.done and len(record.history) == 20000
    leftovers = [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    old = time.time() - 120
    for tmp in leftovers:
        os.utime(tmp, (old, old))  # as if killed a while ago
    assert len(load_records(ResultsLayout(tmp_path), "g")) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["seed0.json"]
    assert json.loads(path.read_text())["status"] == "done"


NONSENSE = {  # cell folder prefix: (how its record is changed, the problem reported)
    "prototype-k-1-": (lambda r: r["metrics"].update(miou=4321.0),
                       "metrics.miou 4321.0 is not a percentage in [0, 100]"),
    "prototype-k-5-": (lambda r: [r.pop(k) for k in list(r) if k not in (
        "status", "cell_key", "seed", "metrics", "params", "timings")] and
        r.update(metrics={"miou": 99.9, "aacc": 99.9, "per_class_iou": {"a": 99.9}}),
        "done record lacks confusion"),
    "softmax-": (lambda r: r["metrics"].update(miou=99.9),
                 "metrics.miou 99.9 disagrees with its confusion matrix"),
}


def test_records_without_sense_are_reported_once_and_never_tabulated(
        smoke_reference, tmp_path, run_all, tiny_smoke) -> None:
    """Issue 24, item 5: an mIoU of 4321, a hand-written six-key record of 99.9, and a stored
    mIoU its confusion matrix does not give: one line each, pending in the table, planned to be
    made again."""
    results = tmp_path / "results"
    shutil.copytree(smoke_reference, results)
    paths = {}
    for prefix, (change, _) in NONSENSE.items():
        (path,) = (results / "runs" / "smoke").glob(f"{prefix}*/seed0.json")
        record = json.loads(path.read_text())
        change(record)
        path.write_text(json.dumps(record))
        paths[prefix] = path
    proc = run_all("--grid", "smoke", "--results", str(results), "--tables-only", *tiny_smoke)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for prefix, path in paths.items():
        lines = [ln for ln in proc.stderr.splitlines() if str(path) in ln]
        assert len(lines) == 1 and NONSENSE[prefix][1] in lines[0], proc.stderr
    assert sorted(csv_states(results)) == ["done", "done", "pending", "pending", "pending"]
    table = (results / "tables" / "smoke.md").read_text()
    assert "4321" not in table and "99.9" not in table
    # made again like any damaged record (test_a_run_remakes_only_the_damaged_records runs it)
    proc = run_all("--grid", "smoke", "--results", str(results), "--dry-run", *tiny_smoke)
    assert proc.returncode == 0 and proc.stdout.count("seed0 damaged (rerun)") == 3, proc.stdout


def test_temp_files_of_interrupted_writers_are_removed_by_the_next_run(
        smoke_reference, tmp_path, run_all, tiny_smoke) -> None:
    """Issue 24, item 6: a record's temp file left by kill -9 survived the rerun for a minute,
    a table's left by a signal was never removed. Temp files name their writer (host, pid):
    the next command removes those whose writer is gone, however fresh."""
    from benchmark.store import _HOST

    results = tmp_path / "results"
    shutil.copytree(smoke_reference, results)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    record = sorted((results / "runs" / "smoke").glob("*/seed0.json"))[0]
    left = [record.parent / f".seed0.json.~{_HOST}~{dead.pid}~k9x.tmp",
            results / "tables" / f".smoke.md.~{_HOST}~{dead.pid}~int.tmp"]
    alive = results / "tables" / f".smoke.csv.~{_HOST}~{os.getpid()}~now.tmp"  # in progress
    for path in [*left, alive]:
        path.write_text('{"half')
    proc = run_all("--grid", "smoke", "--results", str(results), "--tables-only", *tiny_smoke)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not any(p.exists() for p in left) and alive.exists()
