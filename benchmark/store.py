"""The results store: one JSON record per run, written atomically, read back into tables.

Layout: `<root>/runs/<grid>/<cell-key>/seed<k>.json`. A record is complete or absent: it is
written to a temporary file in the same folder and renamed into place (atomic on POSIX).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

RECORD_SCHEMA = 1
DEFAULT_ROOT = Path("results")
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would have made


def record_path(root: Path | str, grid: str, cell_key: str, seed: int) -> Path:
    """Where the record of (grid, cell, seed) lives."""
    return Path(root) / "runs" / grid / cell_key / f"seed{seed}.json"


def jsonable(value: Any) -> Any:
    """NaN/inf are not JSON: store them as null (a class absent from label and prediction)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_record(path: Path | str, record: dict[str, Any]) -> Path:
    """Write `record` to `path` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(record), indent=2, sort_keys=True, allow_nan=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600: others sharing the results could not read
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_record(path: Path | str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def is_done(path: Path | str) -> bool:
    """True when a finished (status 'done') record exists; failed runs are retried."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        return read_record(path).get("status") == "done"
    except (OSError, json.JSONDecodeError):
        return False


def load_records(root: Path | str, grid: str) -> list[dict[str, Any]]:
    """All readable records of a grid (unreadable files are reported by name and skipped)."""
    records = []
    for path in _record_paths(root, grid):
        try:
            records.append(read_record(path))
        except (OSError, json.JSONDecodeError) as err:
            print(f"warning: skipping unreadable record {path}: {err}")
    return records


# What tables and reports never read: the bulk of a record (per-step history, confusion matrix,
# the cell's full settings; the cell key names them), left out of `load_summaries`.
SUMMARY_DROPS = ("cell", "confusion", "history", "traceback")
SUMMARY_CACHE = ".summaries.json"  # in runs/<grid>/; derived data, safe to delete


def load_summaries(root: Path | str, grid: str) -> list[dict[str, Any]]:
    """The grid's records without SUMMARY_DROPS, in `load_records`' order, read through a
    cache beside them: a record is parsed again only when its file changed (inode, size or
    mtime differ; a rewrite is a rename, so a new inode). Tables of 10,000 runs need this:
    parsing every full record takes seconds."""
    folder = Path(root) / "runs" / grid
    cache_path = folder / SUMMARY_CACHE
    try:
        with open(cache_path) as f:
            cached = json.load(f)
        entries = cached["entries"] if cached.get("schema") == RECORD_SCHEMA else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        entries = {}
    fresh: dict[str, list[Any]] = {}
    summaries = []
    changed = False
    for path in _record_paths(root, grid):
        name = f"{path.parent.name}/{path.name}"
        try:
            st = path.stat()
            stamp = [st.st_ino, st.st_size, st.st_mtime_ns]
            entry = entries.get(name)
            if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == stamp):
                record = read_record(path)
                changed = True
                entry = [stamp, {k: v for k, v in record.items() if k not in SUMMARY_DROPS}]
        except (OSError, json.JSONDecodeError) as err:
            print(f"warning: skipping unreadable record {path}: {err}")
            continue
        fresh[name] = entry
        summaries.append(entry[1])
    if changed or len(fresh) != len(entries):
        _write_cache(cache_path, {"schema": RECORD_SCHEMA, "entries": fresh})
    return summaries


def _record_paths(root: Path | str, grid: str) -> list[Path]:
    """runs/<grid>/<cell-key>/seed*.json, sorted by (cell key, file name); os.scandir, since
    pathlib's glob takes a quarter of a second for 10,000 records."""
    folder = Path(root) / "runs" / grid
    try:
        cells = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    paths = []
    for cell in cells:
        names = sorted(n for n in os.listdir(folder / cell)
                       if n.startswith("seed") and n.endswith(".json"))
        paths += [folder / cell / n for n in names]
    return paths


def _write_cache(path: Path, content: dict[str, Any]) -> None:
    """Atomic write of derived data; a folder that cannot be written just goes without."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    except OSError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w") as f:
            json.dump(content, f, separators=(",", ":"), allow_nan=False)
        os.replace(tmp, path)
    except (OSError, ValueError):
        Path(tmp).unlink(missing_ok=True)
