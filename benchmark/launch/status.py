"""`--status`: each run's state from its record, its job (the job log and SLURM), and for runs
in progress who runs them (the lock owner's host and pid) and how far they are (the heartbeat
file the engine rewrites as it trains: step, total, images/s, time left).

A run counts as running exactly while a live process holds its lock (benchmark/launch/locks.py),
so a crashed run never shows as running; its heartbeat is then ignored.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import submitit

from benchmark.launch.locks import describe, holder
from benchmark.launch.runs import NONE, Run


def read_heartbeat(path: Path) -> dict[str, Any] | None:
    """The heartbeat JSON (benchmark/train/telemetry.py: step, total, phase, images_per_s,
    eta_s, updated), None when absent or unreadable (a run before its first beat)."""
    try:
        beat = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return beat if isinstance(beat, dict) else None


def duration(seconds: float) -> str:
    """'1h02m', '4m10s', '35s'."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _age(updated: Any, now: dt.datetime) -> str:
    try:
        when = dt.datetime.fromisoformat(str(updated))
    except ValueError:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return f", updated {duration((now - when).total_seconds())} ago"


def progress_text(beat: dict[str, Any] | None, now: dt.datetime | None = None) -> str:
    """'step 120/800, 35.2 img/s, 4m10s left, updated 12s ago' (what the heartbeat holds;
    a phase other than training comes first, e.g. 'evaluating, step 800/800, ...')."""
    if not beat:
        return "starting (no heartbeat yet)"
    now = now or dt.datetime.now(dt.timezone.utc)
    phase = beat.get("phase")
    parts = [phase] if isinstance(phase, str) and phase != "training" else []
    parts.append(f"step {beat.get('step', '?')}/{beat.get('total', '?')}")
    rate = beat.get("images_per_s", beat.get("img_per_s"))
    if isinstance(rate, (int, float)):
        parts.append(f"{rate:.1f} img/s")
    if isinstance(beat.get("eta_s"), (int, float)):
        parts.append(f"{duration(beat['eta_s'])} left")
    return ", ".join(parts) + _age(beat.get("updated"), now)


def running_detail(run: Run) -> str | None:
    """'host h, pid p; step ...' while a live process holds the run's lock, else None."""
    owner = holder(run.lock_path)
    if owner is None:
        return None
    beat = read_heartbeat(run.heartbeat_path)
    return f"{describe(owner)}; {progress_text(beat)}"


def with_running(runs: list[Run], rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """`run_status` rows with every run that a live process holds marked `running`."""
    out = []
    for run, row in zip(runs, rows):
        detail = None if row.get("state") == "done" else running_detail(run)
        out.append({**row, "state": "running", "detail": detail} if detail else row)
    return out


def _last_line(path: str) -> str:
    try:
        lines = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run_status(runs: list[Run]) -> list[dict[str, str]]:
    """done / failed (with the error) / damaged from records; running / pending from the job
    log (a damaged record counts as not done: the run is made again)."""
    jobs = _latest_jobs(runs[0].layout.jobs_log(runs[0].cell.grid)) if runs else {}
    rows = []
    for run in runs:
        row = {"row": run.cell.row, "seed": str(run.seed), "state": "not submitted",
               "detail": "", "job": ""}
        state = run.state
        if state.state != NONE:
            row.update(state=state.state, detail=state.detail)
        entry = jobs.get((run.cell.key, run.seed))
        if entry and row["state"] != "done":
            row["job"] = entry["job_id"]
            state = _job_state(entry)
            if row["state"] == "failed" and state in ("RUNNING", "PENDING", "REQUEUED"):
                row["state"] = state.lower()  # a retry is under way
            elif row["state"] in ("not submitted", "damaged"):
                row["state"] = state.lower()
                if state in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"):
                    row["state"] = "failed"
                    row["detail"] = _last_line(entry["stderr"])
        rows.append(row)
    return rows


def _latest_jobs(log: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """The latest submission of each (cell key, seed) in the job log; damaged lines skipped."""
    jobs: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return jobs
    for line in lines:
        try:
            entry = json.loads(line)
            jobs[(entry["cell_key"], entry["seed"])] = entry  # the latest submission wins
        except (ValueError, KeyError, TypeError):
            continue
    return jobs


def _job_state(entry: dict[str, Any]) -> str:
    """SLURM state via submitit (sacct), else squeue (sacct lags behind a fresh submission by
    seconds); local jobs by their files."""
    if entry["executor"] == "slurm":
        try:
            state = submitit.SlurmJob(folder=entry["folder"], job_id=entry["job_id"]).state
        except Exception:  # noqa: BLE001 - sacct missing or job unknown
            state = "UNKNOWN"
        if state == "UNKNOWN":
            state = _squeue_state(entry["job_id"])
        return state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
    if Path(entry["stdout"]).exists():
        return "FINISHED" if _result_exists(entry) else "RUNNING"
    return "PENDING"


def _squeue_state(job_id: str) -> str:
    """The state in SLURM's queue, which knows a job from the moment it is submitted."""
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%T", "-j", job_id], capture_output=True,
                             text=True, timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "UNKNOWN"
    return out[0] if out else "UNKNOWN"


def _result_exists(entry: dict[str, Any]) -> bool:
    return (Path(entry["folder"]) / f"{entry['job_id']}_0_result.pkl").exists() or \
        (Path(entry["folder"]) / f"{entry['job_id']}_result.pkl").exists()
