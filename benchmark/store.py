"""The results store: the run record type, the results layout, one atomic writer.

`Record` is what one run produced (docs/design.md); `ResultsLayout` is the only place that
knows where anything lives under the results folder; `atomic_write` is the only way a file is
written there (temp file in the same folder, fsync, rename: a file is complete or absent; the
temp file names its writer, so the next write removes one an interrupted writer left).
A record that cannot be read, lacks what its status requires, or fails the sense checks of
benchmark/sense.py (metrics in range and equal to those of its confusion matrix) is reported
once (one line with its path) and counts as not done, so the run is made again; it never
crashes a command and never reaches a table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

from benchmark.disk import disk_full, is_full
from benchmark.records import PAYLOADS, Memory, Metrics, Params, Provenance, Timings
from benchmark.sense import VERSION as SENSE_VERSION, sense_problem

# 2: provenance nested under "provenance"; 1 (still read, upgraded to 2): at the top level.
# The typed payloads (benchmark/records.py) did not bump it: they change the record in memory
# only, its JSON is key for key what schema 2 wrote (unknown keys kept), so older and newer
# code read each other's records and the summary caches stay valid.
RECORD_SCHEMA = 2
STATUSES = ("done", "failed")
KINDS = ("trained", "published-checkpoint")
PROVENANCE_KEYS = ("git_commit", "versions", "hardware", "host")  # schema 1: top-level keys
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would have made
PUBLISHED_RECORD = "published.json"  # beside the cell's seed<N>.json trained records
STALE_TEMP_S = 60.0  # a temp file older than this was left by a killed writer
_HOST = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())  # temp names carry host and pid
_WRITER = re.compile(r"~([A-Za-z0-9._-]+)~(\d+)~[^~]*\.tmp$")


class RecordError(ValueError):
    """A record that cannot be used; the message is one line naming the file and the problem."""


class WriteError(OSError):
    """A file that could not be written: errno kept, the message names the path."""

    def __str__(self) -> str:
        return str(self.strerror)


# --------------------------------------------------------------------------- atomic writes


def atomic_write(path: Path | str, data: str | bytes | Callable[[BinaryIO], None],
                 mode: int = FILE_MODE) -> Path:
    """Write `data` (text as UTF-8, bytes, or a callable writing into the open binary file,
    e.g. `lambda f: torch.save(state, f)`) to `path` atomically; the folder is created.
    On failure the temp file is removed; an OSError names `path`, a full disk is one
    `benchmark.disk.DiskFull` (other errors raised by a callable propagate unchanged)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(path.parent, prefix=f".{path.name}.")  # this file's interrupted writes
        writer = f".{path.name}.~{_HOST}~{os.getpid()}~"  # _writer_gone reads it back
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=writer, suffix=".tmp")
        os.fchmod(fd, mode)  # mkstemp makes 0600: others sharing the results could not read
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        need = None if callable(data) else len(data)
        # before the temp file goes: what it holds is part of what the disk could not take
        full = isinstance(err, Exception) and is_full(err, path.parent, need)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if full:
            raise disk_full(path, "writing", need) from None
        if isinstance(err, OSError) and str(path) not in str(err):
            raise WriteError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
        raise
    return path


def _writer_gone(name: str) -> bool:
    """Whether the temp file `name` names its writer (`~host~pid~`) and that process, on this
    host, no longer runs: its write was interrupted, nobody will finish it."""
    m = _WRITER.search(name)
    if m is None or m[1] != _HOST:
        return False
    try:
        os.kill(int(m[2]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, OverflowError):
        return False
    return False


def clean_stale_temps(folder: Path, older_than_s: float = STALE_TEMP_S,
                      prefix: str = ".") -> None:
    """Remove `<prefix>*.tmp` files (default: every `.<name>.*.tmp`) a killed or interrupted
    writer left in `folder`: at once when its writer on this host is gone, else once older than
    a minute (a writer on another host sharing the folder may still be at it)."""
    now = time.time()
    try:
        stale = [e.path for e in os.scandir(folder) if e.name.startswith(prefix)
                 and e.name.startswith(".") and e.name.endswith(".tmp")
                 and (_writer_gone(e.name) or now - e.stat().st_mtime > older_than_s)]
    except OSError:
        return
    for path in stale:
        with contextlib.suppress(OSError):
            os.unlink(path)


def jsonable(value: Any) -> Any:
    """NaN/inf are not JSON: store them as null (a class absent from label and prediction)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------- the layout


@dataclass(frozen=True)
class ResultsLayout:
    """Where everything lives under the results folder (docs/design.md)."""

    root: Path = Path("results")

    def __init__(self, root: Path | str = "results") -> None:
        object.__setattr__(self, "root", Path(root))

    def runs(self, grid: str) -> Path:
        return self.root / "runs" / grid

    def record(self, grid: str, cell_key: str, seed: int) -> Path:
        """A trained run's record (kind `trained`)."""
        return self.runs(grid) / cell_key / f"seed{seed}.json"

    def published_record(self, grid: str, cell_key: str) -> Path:
        """A published checkpoint's evaluation (kind `published-checkpoint`): its own file, so
        an evaluation and a training of the same cell never replace each other."""
        return self.runs(grid) / cell_key / PUBLISHED_RECORD

    def checkpoints(self, grid: str, cell_key: str, seed: int) -> Path:
        return self.root / "checkpoints" / grid / cell_key / f"seed{seed}"

    def final_weights(self, grid: str, cell_key: str, seed: int) -> Path:
        return self.checkpoints(grid, cell_key, seed) / "final.pt"

    def heartbeat(self, grid: str, cell_key: str, seed: int) -> Path:
        return self.checkpoints(grid, cell_key, seed) / "heartbeat.json"

    def logs(self, grid: str, cell_key: str, seed: int) -> Path:
        return self.root / "logs" / grid / cell_key / f"seed{seed}"

    def lock(self, grid: str, cell_key: str, seed: int) -> Path:
        return self.root / "locks" / grid / cell_key / f"seed{seed}.lock"

    def tables(self) -> Path:
        return self.root / "tables"

    def figures(self, grid: str) -> Path:
        return self.root / "figures" / grid

    def report(self, grid: str) -> Path:
        return self.root / f"report_{grid}.md"

    def jobs_log(self, grid: str) -> Path:
        return self.root / "jobs" / f"{grid}.jsonl"

    def jobs_dir(self, grid: str, stamp: str) -> Path:
        return self.root / "jobs" / grid / stamp

    def sequential(self, grid: str) -> Path:
        """`--seeds auto`: the design, and each pair's looks and decision (benchmark/looks.py)."""
        return self.root / "sequential" / f"{grid}.json"

    def looks(self, grid: str) -> Path:
        """The paired seed counts each command's tables showed (benchmark/looks.py)."""
        return self.root / "looks" / f"{grid}.json"


# --------------------------------------------------------------------------- the record


@dataclass
class Record:
    """What one run produced; `to_json` is what is written, `from_json` validates."""

    status: str
    cell_key: str
    seed: int
    grid: str = ""  # also the record's folder name (runs/<grid>/), so not required
    kind: str = "trained"
    cell: dict = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)  # each payload also accepts its dict
    params: Params = field(default_factory=Params)
    timings: Timings = field(default_factory=Timings)
    memory: Memory = field(default_factory=Memory)
    history: list = field(default_factory=list)
    confusion: list = field(default_factory=list)
    provenance: Provenance = field(default_factory=Provenance)
    error: str | None = None
    traceback: str | None = None
    started: str | None = None
    finished: str | None = None
    weights_sha256: str | None = None
    world_size: int = 1
    checkpoint: dict | None = None
    plugins: list = field(default_factory=list)  # packages outside the repo the cell uses
    schema: int = RECORD_SCHEMA

    def __post_init__(self) -> None:
        """Payloads given as their JSON objects (from disk, tests) become their dataclasses."""
        for name, kind in PAYLOADS.items():
            setattr(self, name, kind.from_dict(getattr(self, name)))

    @property
    def miou(self) -> float | None:
        value = self.metrics.miou
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def done(self) -> bool:
        return self.status == "done"

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to disk (NaN/inf as null)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update({name: getattr(self, name).to_json() for name in PAYLOADS})
        if out["checkpoint"] is None:
            del out["checkpoint"]
        return jsonable(out)

    @classmethod
    def from_json(cls, data: Any, path: Path | str | None = None) -> Record:
        """A Record from parsed JSON (schema 1 or 2, upgraded to RECORD_SCHEMA), its payloads
        typed; RecordError when it lacks what its status requires (done: metrics with a numeric
        miou, params, timings; failed: error)."""
        where = f"record {path}" if path is not None else "record"
        problem = _problem(data)
        if problem:
            raise RecordError(f"{where}: {problem}")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        prov = dict(values.get("provenance") or {})
        for key in PROVENANCE_KEYS:  # schema 1 kept provenance at the top level
            if key in data and key not in prov:
                prov[key] = data[key]
        values["provenance"] = prov
        values = {k: v for k, v in values.items() if v is not None}  # null: the default
        return cls(**{**values, "schema": RECORD_SCHEMA})  # upgraded: schema 2's shape

    def summary(self) -> Record:
        """This record without its bulk (SUMMARY_DROPS): what tables and reports read."""
        return dataclasses.replace(self, cell={}, history=[], confusion=[], traceback=None)


# the JSON type of each field, from its annotation ("dict", "str | None", "Metrics", ...)
_JSON = {"dict": dict, "list": list, "str": str, "int": int,
         **{kind.__name__: dict for kind in PAYLOADS.values()}}  # a payload is a JSON object
_TYPES = {f.name: _JSON[f.type.split(" |")[0]] for f in dataclasses.fields(Record)}
_REQUIRED = {"done": ("metrics", "params", "timings"), "failed": ("error",)}


def _problem(data: Any) -> str | None:
    """What makes `data` unusable as a record, in a few words, or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    status = data.get("status")
    if status not in STATUSES:
        return f"status {status!r}, expected 'done' or 'failed'"
    missing = [k for k in ("cell_key", "seed") + _REQUIRED[status] if data.get(k) is None]
    if missing:
        return f"{status} record lacks {', '.join(missing)}"
    for key, kind in _TYPES.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            return f"{key} is a {type(value).__name__}, expected {kind.__name__}"
    if data.get("kind", "trained") not in KINDS:
        return f"kind {data['kind']!r}, expected one of {', '.join(KINDS)}"
    if status == "done":
        miou = data["metrics"].get("miou")
        if not isinstance(miou, (int, float)) or isinstance(miou, bool) or not math.isfinite(miou):
            return f"done record has no numeric metrics.miou ({miou!r})"
        if data.get("kind") == "published-checkpoint" and not data.get("checkpoint"):
            return "published-checkpoint record lacks checkpoint"
    return None


# --------------------------------------------------------------------------- reading, writing


def write_record(path: Path | str, record: Record | Mapping[str, Any] | list) -> Path:
    """Write a record atomically (other JSON is written as given: tests write damaged ones);
    stale temp files of killed writers in the same folder are removed."""
    body = record.to_json() if isinstance(record, Record) else jsonable(record)
    text = json.dumps(body, indent=2, sort_keys=True, allow_nan=False) + "\n"
    clean_stale_temps(Path(path).parent)
    return atomic_write(path, text)


def read_record(path: Path | str) -> Record:
    """The record at `path`; RecordError when unparsable or incomplete (OSError if unreadable)."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"record {path}: not valid JSON (truncated?): {err}") from None
    record = Record.from_json(data, path)
    problem = sense_problem(data)  # a done record's metrics against its confusion matrix
    if problem:
        raise RecordError(f"record {path}: {problem}")
    return record


_REPORTED: set[str] = set()


def forget_reported() -> None:
    """Start a new command: each bad record is reported again, once (`benchmark.cli.main`)."""
    _REPORTED.clear()


def report_bad_record(err: Exception, stream: Any = None) -> None:
    """Print one line for an unusable record, once per process and message."""
    if isinstance(err, OSError) and err.filename:
        message = f"record {err.filename}: {err.strerror or err}"
    else:
        message = (str(err).splitlines() or [type(err).__name__])[0]
    if message in _REPORTED:
        return
    _REPORTED.add(message)
    print(f"warning: skipping {message}; it counts as not done (the run is made again)",
          file=stream or sys.stderr)


def load_records(layout: ResultsLayout, grid: str) -> list[Record]:
    """All usable records of a grid; unusable files are reported once and skipped."""
    records = []
    for path in _record_paths(layout, grid):
        try:
            records.append(read_record(path))
        except (OSError, RecordError) as err:
            report_bad_record(err)
    return records


# What tables and reports never read: the bulk of a record (per-step history, confusion matrix,
# the cell's full settings; the cell key names them), left out of `load_summaries`.
SUMMARY_DROPS = ("cell", "confusion", "history", "traceback")
SUMMARY_CACHE = ".summaries.json"  # in runs/<grid>/; derived data, safe to delete


def load_summaries(layout: ResultsLayout, grid: str) -> list[Record]:
    """The grid's records as `Record.summary()`, in `load_records`' order, read through a
    cache beside them: a record is parsed again only when its file changed (inode, size or
    mtime differ; a rewrite is a rename, so a new inode). Tables of 10,000 runs need this:
    parsing every full record takes seconds."""
    cache_path = layout.runs(grid) / SUMMARY_CACHE
    entries = _read_cache(cache_path)
    fresh: dict[str, list[Any]] = {}
    summaries = []
    changed = False
    for path in _record_paths(layout, grid):
        name = f"{path.parent.name}/{path.name}"
        try:
            st = path.stat()
            stamp = [st.st_ino, st.st_size, st.st_mtime_ns]
            entry = entries.get(name)
            if isinstance(entry, list) and len(entry) == 2 and entry[0] == stamp:
                summary = Record.from_json(entry[1], path)
            else:
                summary = read_record(path).summary()
                changed = True
                entry = [stamp, summary.to_json()]
        except (OSError, RecordError) as err:
            report_bad_record(err)
            continue
        fresh[name] = entry
        summaries.append(summary)
    if changed or len(fresh) != len(entries):
        _write_cache(cache_path, {"schema": RECORD_SCHEMA, "checks": SENSE_VERSION,
                                  "entries": fresh})
    return summaries


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            cached = json.load(f)
        current = cached.get("schema") == RECORD_SCHEMA and cached.get("checks") == SENSE_VERSION
        entries = cached["entries"] if current else {}  # summaries read under older checks
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _write_cache(path: Path, content: dict[str, Any]) -> None:
    """Write derived data; a folder that cannot be written just goes without."""
    try:
        atomic_write(path, json.dumps(content, separators=(",", ":"), allow_nan=False))
    except (OSError, ValueError):
        pass


def _record_paths(layout: ResultsLayout, grid: str) -> list[Path]:
    """runs/<grid>/<cell-key>/{seed*,published}.json, sorted by (cell key, file name); os.scandir,
    since pathlib's glob takes a quarter of a second for 10,000 records. Stale temp files of killed
    writers are removed on the way."""
    folder = layout.runs(grid)
    try:
        cells = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    clean_stale_temps(folder)
    paths = []
    for cell in cells:
        names = sorted(os.listdir(folder / cell))
        if any(n.endswith(".tmp") for n in names):
            clean_stale_temps(folder / cell)
        paths += [folder / cell / n for n in names
                  if n == PUBLISHED_RECORD or (n.startswith("seed") and n.endswith(".json"))]
    return paths
