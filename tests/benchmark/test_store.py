"""The results store: the Record type, atomic writes, exact round trip, skipping finished runs."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import pytest
from record_fixtures import consistent

from benchmark.config import Cell
from benchmark.launch.runs import plan, run_state
from benchmark.records import Metrics, Provenance
from benchmark.store import (SUMMARY_CACHE, SUMMARY_DROPS, Record, RecordError, ResultsLayout,
                             atomic_write, load_records, load_summaries, read_record, write_record)


def sample_record() -> dict:
    return {"schema": 2, "grid": "g", "cell_key": "softmax-abc", "seed": 0, "status": "done",
            **consistent(41.25, {"a": 40.0, "b": 42.5, "c": None}),  # a matrix backs them
            "params": {"learnable": 123, "total": 130}, "timings": {"train_s": 3.5},
            "history": [{"step": 0, "loss": 2.5}]}


def test_round_trip_is_identical(tmp_path) -> None:
    path = ResultsLayout(tmp_path).record("g", "softmax-abc", 0)
    record = Record.from_json(sample_record())
    write_record(path, record)
    assert read_record(path) == record
    assert Record.from_json(json.loads(path.read_text())).to_json() == record.to_json()
    assert {k: v for k, v in record.to_json().items() if k in sample_record()} == sample_record()
    assert path == tmp_path / "runs" / "g" / "softmax-abc" / "seed0.json"


def test_nan_is_stored_as_null(tmp_path) -> None:
    path = write_record(tmp_path / "r.json", {"iou": float("nan"), "x": [float("inf"), 1.0]})
    assert json.loads(path.read_text()) == {"iou": None, "x": [None, 1.0]}


def test_crash_between_write_and_rename_leaves_nothing(tmp_path, monkeypatch) -> None:
    path = tmp_path / "runs" / "g" / "k" / "seed0.json"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_record(path, sample_record())
    assert not path.exists()
    assert list(path.parent.iterdir()) == []  # no temp file left behind either


def test_crash_keeps_the_previous_record(tmp_path, monkeypatch) -> None:
    path = write_record(tmp_path / "seed0.json", sample_record())
    monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        write_record(path, {"status": "failed"})
    assert read_record(path) == Record.from_json(sample_record())


def test_plan_skips_done_runs_and_retries_failed(tmp_path) -> None:
    cells = [Cell(grid="g", row="A"), Cell(grid="g", row="B")]
    runs = plan(cells, [0, 1], ResultsLayout(tmp_path))
    assert [r.done for r in runs] == [False] * 4
    write_record(runs[0].path, {**sample_record(), "cell_key": cells[0].key})
    write_record(runs[1].path, {**sample_record(), "status": "failed", "error": "OOM"})
    runs = plan(cells, [0, 1], ResultsLayout(tmp_path))
    assert [r.done for r in runs] == [True, False, False, False]
    assert not run_state(tmp_path / "missing.json").done
    assert len(load_records(ResultsLayout(tmp_path), "g")) == 2


def test_records_are_readable_by_whoever_shares_the_results(tmp_path) -> None:
    """mkstemp creates 0600 files; a record gets the mode open() would give it."""
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_record(tmp_path / "seed0.json", sample_record())
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def _write_grid(root, n: int = 3) -> list:
    paths = []
    for i in range(n):
        record = {**sample_record(), "cell_key": f"cell-{i % 2}", "seed": i,
                  "cell": {"row": "A"}}
        paths.append(write_record(ResultsLayout(root).record("g", f"cell-{i % 2}", i), record))
    return paths


def test_summaries_are_the_records_without_their_bulk(tmp_path) -> None:
    _write_grid(tmp_path)
    full = load_records(ResultsLayout(tmp_path), "g")
    assert all(r.history and r.confusion and r.cell for r in full)
    expected = [r.summary() for r in full]
    assert load_summaries(ResultsLayout(tmp_path), "g") == expected  # first call: parses and caches
    assert (tmp_path / "runs" / "g" / SUMMARY_CACHE).exists()
    assert load_summaries(ResultsLayout(tmp_path), "g") == expected  # second call: from the cache
    for s, r in zip(expected, full):
        assert all(not getattr(s, k) for k in SUMMARY_DROPS)
        assert s.to_json() == {**r.to_json(), "cell": {}, "history": [], "confusion": [],
                               "traceback": None}


def test_summaries_follow_changed_added_and_deleted_records(tmp_path, monkeypatch) -> None:
    import benchmark.store as store

    paths = _write_grid(tmp_path)
    load_summaries(ResultsLayout(tmp_path), "g")
    rewritten = {**read_record(paths[0]).to_json(), **consistent(99.0)}
    write_record(paths[0], rewritten)  # same size class, new file (rename): must be re-read
    paths[1].unlink()
    write_record(ResultsLayout(tmp_path).record("g", "cell-9", 7),
                 {**sample_record(), "cell_key": "cell-9", "seed": 7})
    parsed = []
    real_read = store.read_record
    monkeypatch.setattr(store, "read_record", lambda p: parsed.append(p) or real_read(p))
    summaries = load_summaries(ResultsLayout(tmp_path), "g")
    assert sorted(p.name for p in parsed) == ["seed0.json", "seed7.json"]  # seed2 from cache
    assert [(s.cell_key, s.seed) for s in summaries] == [("cell-0", 0), ("cell-0", 2),
                                                          ("cell-9", 7)]
    assert summaries[0].metrics == Metrics.from_dict(consistent(99.0)["metrics"])
    parsed.clear()
    assert load_summaries(ResultsLayout(tmp_path), "g") == summaries and parsed == []


def test_a_broken_cache_or_record_is_survived(tmp_path, capsys) -> None:
    paths = _write_grid(tmp_path)
    (tmp_path / "runs" / "g" / SUMMARY_CACHE).write_text("{not json")
    assert len(load_summaries(ResultsLayout(tmp_path), "g")) == 3
    paths[2].write_text('{"truncated": ')
    assert len(load_summaries(ResultsLayout(tmp_path), "g")) == 2
    err = capsys.readouterr().err
    assert f"warning: skipping record {paths[2]}: not valid JSON" in err and err.count("\n") == 1
    assert load_summaries(ResultsLayout(tmp_path), "missing-grid") == []


DAMAGED = [
    ({"status": "done"}, "done record lacks cell_key, seed, metrics, params, timings"),
    ([], "a JSON list, not an object"),
    ({**sample_record(), "status": "failed"}, "failed record lacks error"),
    ({**sample_record(), "status": "finished"}, "status 'finished', expected 'done' or 'failed'"),
    ({**sample_record(), "metrics": {"aacc": 1.0}}, "done record has no numeric metrics.miou"),
    ({**sample_record(), "seed": "0"}, "seed is a str, expected int"),
    ({**sample_record(), "kind": "guessed"}, "kind 'guessed', expected one of"),
    ({**sample_record(), "kind": "published-checkpoint"},
     "published-checkpoint record lacks checkpoint"),
]


@pytest.mark.parametrize("data, problem", DAMAGED)
def test_incomplete_records_are_refused_per_status(tmp_path, data, problem) -> None:
    path = write_record(tmp_path / "runs" / "g" / "k" / "seed0.json", data)
    with pytest.raises(RecordError) as err:
        read_record(path)
    assert str(err.value).startswith(f"record {path}: {problem}")
    assert "\n" not in str(err.value)
    assert not run_state(path).done
    assert load_records(ResultsLayout(tmp_path), "g") == [] and load_summaries(ResultsLayout(tmp_path), "g") == []


def test_truncated_json_is_a_record_error(tmp_path) -> None:
    path = write_record(tmp_path / "seed0.json", sample_record())
    path.write_text(path.read_text()[:40])
    with pytest.raises(RecordError, match=r"not valid JSON \(truncated\?\)"):
        read_record(path)
    assert not run_state(path).done


def test_a_failed_record_and_a_published_checkpoint_are_valid() -> None:
    failed = Record.from_json({"status": "failed", "grid": "g", "cell_key": "k", "seed": 1,
                               "error": "RuntimeError: boom", "metrics": None})
    assert failed.miou is None and failed.metrics == Metrics() and not failed.done
    published = Record.from_json({**sample_record(), "kind": "published-checkpoint",
                                  "checkpoint": {"file": "w.pt", "sha256": "ab"}})
    assert published.checkpoint == {"file": "w.pt", "sha256": "ab"}
    assert Record.from_json(published.to_json()) == published


def test_schema_1_records_read_with_provenance_at_the_top_level() -> None:
    old = {**sample_record(), "schema": 1, "git_commit": "abc-dirty", "versions": {"torch": "2"},
           "hardware": {"cpu": "Ryzen", "torch_threads": 2}}
    record = Record.from_json(old)
    assert record.provenance == Provenance(git_commit="abc-dirty", versions={"torch": "2"},
                                           hardware={"cpu": "Ryzen", "torch_threads": 2})
    assert record.schema == 2 and record.miou == 41.25  # upgraded on read: schema 2's shape
    assert record.metrics.aacc == sample_record()["metrics"]["aacc"]


def test_the_committed_camvid_records_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "results"
    paths = sorted((root / "runs" / "camvid").glob("*/seed*.json"))
    assert len(paths) == 12
    assert all(read_record(p).done for p in paths)
    assert len(load_records(ResultsLayout(root), "camvid")) == 12


def test_a_bad_record_is_reported_once(tmp_path, capsys) -> None:
    path = write_record(ResultsLayout(tmp_path).record("g", "k", 0), {"status": "done"})
    for _ in range(3):
        assert not run_state(path).done
        assert load_records(ResultsLayout(tmp_path), "g") == [] and load_summaries(ResultsLayout(tmp_path), "g") == []
    err = capsys.readouterr().err
    assert err.count(str(path)) == 1 and err.count("\n") == 1


def test_layout_names_every_path(tmp_path) -> None:
    layout = ResultsLayout(tmp_path)
    assert ResultsLayout().root == Path("results") and ResultsLayout(str(tmp_path)) == layout
    assert layout.record("g", "k", 2) == tmp_path / "runs/g/k/seed2.json"
    assert layout.runs("g") == tmp_path / "runs/g"
    assert layout.checkpoints("g", "k", 2) == tmp_path / "checkpoints/g/k/seed2"
    assert layout.final_weights("g", "k", 2) == tmp_path / "checkpoints/g/k/seed2/final.pt"
    assert layout.heartbeat("g", "k", 2) == tmp_path / "checkpoints/g/k/seed2/heartbeat.json"
    assert layout.logs("g", "k", 2) == tmp_path / "logs/g/k/seed2"
    assert layout.lock("g", "k", 2) == tmp_path / "locks/g/k/seed2.lock"
    assert layout.tables() == tmp_path / "tables"
    assert layout.figures("g") == tmp_path / "figures/g"
    assert layout.report("g") == tmp_path / "report_g.md"
    assert layout.jobs_log("g") == tmp_path / "jobs/g.jsonl"
    assert layout.jobs_dir("g", "20260101-000000") == tmp_path / "jobs/g/20260101-000000"
    assert pickle.loads(pickle.dumps(layout)) == layout


@pytest.mark.parametrize("data, expected", [
    ("héllo\n", "héllo\n".encode()), (b"\x00\x01", b"\x00\x01"),
    (lambda f: f.write(b"from a callable"), b"from a callable"),
])
def test_atomic_write_takes_text_bytes_or_a_callable(tmp_path, data, expected) -> None:
    path = atomic_write(tmp_path / "sub" / "out.bin", data)
    assert path.read_bytes() == expected
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.bin"]


def test_atomic_write_failure_removes_the_temp_file_and_names_the_path(tmp_path) -> None:
    path = atomic_write(tmp_path / "w.pt", b"old")

    def broken(f) -> None:
        f.write(b"half")
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match=f"cannot write {path}: Input/output error") as err:
        atomic_write(path, broken)
    assert err.value.errno == 5
    assert str(err.value) == f"cannot write {path}: Input/output error"
    with pytest.raises(OSError, match=f"no space left on device .* for writing {path}: ") as err:
        atomic_write(path, lambda f: (_ for _ in ()).throw(OSError(28, "No space left")))
    assert err.value.errno == 28  # a full disk says its device (tests/faults/test_full_disk.py)
    with pytest.raises(ZeroDivisionError):
        atomic_write(path, lambda f: 1 / 0)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]


def test_atomic_write_where_the_folder_cannot_be_made_names_the_path(tmp_path) -> None:
    (tmp_path / "file").write_text("not a folder")
    target = tmp_path / "file" / "sub" / "x.json"
    with pytest.raises(OSError, match=f"cannot write {target}"):
        atomic_write(target, "{}")


def test_stale_temp_files_of_killed_writers_are_cleaned(tmp_path) -> None:
    path = write_record(ResultsLayout(tmp_path).record("g", "k", 0), sample_record())
    stale = path.parent / ".seed0.json.abc123.tmp"
    fresh = path.parent / ".seed1.json.def456.tmp"
    for tmp in (stale, fresh):
        tmp.write_text('{"half')
    old = time.time() - 120
    os.utime(stale, (old, old))
    assert len(load_records(ResultsLayout(tmp_path), "g")) == 1  # listing cleans up
    assert not stale.exists() and fresh.exists()  # a write in progress is left alone
    os.utime(fresh, (old, old))
    write_record(path, sample_record())  # writing cleans up too
    assert sorted(p.name for p in path.parent.iterdir()) == ["seed0.json"]
