"""Move results stored under an older cell key to today's key, once, with their results intact.

Keys changed once (config.KEY_VERSION 2: a head hashes only its own options, not every head's).
Each record keeps its cell's full settings, so a folder's key is recomputed from the record it
holds: when it differs, the folder (records, checkpoints, logs) is renamed and the records' key
rewritten; metrics, history and timings are untouched. A marker file per grid makes later
commands skip the scan.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmark.config import KEY_VERSION, ConfigError, cell_from_dict
from benchmark.store import (RecordError, ResultsLayout, atomic_write, read_record,
                             write_record)

MARKER = f".keys-v{KEY_VERSION}"  # in runs/<grid>/: every folder there has today's key


def migrate_grid(layout: ResultsLayout, grid: str) -> list[tuple[str, str]]:
    """Rename the grid's cell folders whose records hash to another key today; returns the
    (old, new) keys moved. A folder whose target exists already, or whose records cannot be
    read or rebuilt (e.g. a plugin head not installed), is left where it is."""
    runs = layout.runs(grid)
    if not runs.is_dir() or (runs / MARKER).exists():
        return []
    moved = []
    complete = True
    for folder in sorted(p for p in runs.iterdir() if p.is_dir()):
        new_key = _key_today(folder)
        if new_key is None:
            complete = False
            continue
        if new_key == folder.name:
            continue
        if (runs / new_key).exists():
            complete = False
            continue
        _move(layout, grid, folder.name, new_key)
        moved.append((folder.name, new_key))
    if complete:
        try:
            atomic_write(runs / MARKER, json.dumps({"key_version": KEY_VERSION}) + "\n")
        except OSError:
            pass  # a read-only results folder: scanned again next time, nothing lost
    return moved


def _key_today(folder: Path) -> str | None:
    """The key today's code gives the cell of the folder's first readable record."""
    for path in sorted(folder.glob("*.json")):
        try:
            record = read_record(path)
        except (OSError, RecordError):
            continue
        if not record.cell:
            continue
        try:
            return cell_from_dict(record.cell).key
        except (ConfigError, TypeError, ValueError):
            return None
    return None


def _move(layout: ResultsLayout, grid: str, old: str, new: str) -> None:
    """Rename runs/, checkpoints/ and logs/ folders of a cell, then rewrite its records' key."""
    for parent in (layout.runs(grid), layout.root / "checkpoints" / grid,
                   layout.root / "logs" / grid):
        if (parent / old).is_dir() and not (parent / new).exists():
            os.replace(parent / old, parent / new)
    for path in sorted((layout.runs(grid) / new).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("cell_key") == old:
            write_record(path, {**data, "cell_key": new})  # nothing else of the record changes


__all__ = ["MARKER", "migrate_grid"]
