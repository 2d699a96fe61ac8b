"""`--status` for runs in progress: who runs them (the lock owner's host and pid) and how far
they are (the heartbeat file the engine rewrites as it trains: step, total, images/s, time left).

A run counts as running exactly while a live process holds its lock (benchmark/launch/locks.py),
so a crashed run never shows as running; its heartbeat is then ignored.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from benchmark.launch.locks import describe, holder


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


def running_detail(run: Any) -> str | None:
    """'host h, pid p; step ...' while a live process holds the run's lock, else None."""
    owner = holder(run.lock_path)
    if owner is None:
        return None
    beat = read_heartbeat(run.heartbeat_path)
    return f"{describe(owner)}; {progress_text(beat)}"


def with_running(runs: list[Any], rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """`run_status` rows with every run that a live process holds marked `running`."""
    out = []
    for run, row in zip(runs, rows):
        detail = None if row.get("state") == "done" else running_detail(run)
        out.append({**row, "state": "running", "detail": detail} if detail else row)
    return out
