"""The results store: atomic records, exact round trip, skipping finished runs."""

from __future__ import annotations

import json
import os

import pytest

from benchmark.config import Cell
from benchmark.launch.executors import plan
from benchmark.store import (SUMMARY_CACHE, SUMMARY_DROPS, is_done, load_records, load_summaries,
                             read_record, record_path, write_record)


def sample_record() -> dict:
    return {"schema": 1, "grid": "g", "cell_key": "softmax-abc", "seed": 0, "status": "done",
            "metrics": {"miou": 41.25, "aacc": 80.5, "per_class_iou": {"a": 1.5, "b": None}},
            "params": {"learnable": 123, "total": 130}, "history": [{"step": 0, "loss": 2.5}]}


def test_round_trip_is_identical(tmp_path) -> None:
    path = record_path(tmp_path, "g", "softmax-abc", 0)
    record = sample_record()
    write_record(path, record)
    assert read_record(path) == record
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
    assert read_record(path) == sample_record()


def test_plan_skips_done_runs_and_retries_failed(tmp_path) -> None:
    cells = [Cell(grid="g", row="A"), Cell(grid="g", row="B")]
    runs = plan(cells, [0, 1], tmp_path)
    assert [r.done for r in runs] == [False] * 4
    write_record(runs[0].path, {**sample_record(), "cell_key": cells[0].key})
    write_record(runs[1].path, {**sample_record(), "status": "failed"})
    runs = plan(cells, [0, 1], tmp_path)
    assert [r.done for r in runs] == [True, False, False, False]
    assert not is_done(tmp_path / "missing.json")
    assert len(load_records(tmp_path, "g")) == 2


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
                  "cell": {"row": "A"}, "confusion": [[1, 2], [3, 4]]}
        paths.append(write_record(record_path(root, "g", f"cell-{i % 2}", i), record))
    return paths


def test_summaries_are_the_records_without_their_bulk(tmp_path) -> None:
    _write_grid(tmp_path)
    full = load_records(tmp_path, "g")
    expected = [{k: v for k, v in r.items() if k not in SUMMARY_DROPS} for r in full]
    assert load_summaries(tmp_path, "g") == expected  # first call: parses and caches
    assert (tmp_path / "runs" / "g" / SUMMARY_CACHE).exists()
    assert load_summaries(tmp_path, "g") == expected  # second call: from the cache
    assert all("history" not in s and "confusion" not in s for s in expected)


def test_summaries_follow_changed_added_and_deleted_records(tmp_path, monkeypatch) -> None:
    import benchmark.store as store

    paths = _write_grid(tmp_path)
    load_summaries(tmp_path, "g")
    rewritten = {**read_record(paths[0]), "metrics": {"miou": 99.0}}
    write_record(paths[0], rewritten)  # same size class, new file (rename): must be re-read
    paths[1].unlink()
    write_record(record_path(tmp_path, "g", "cell-9", 7),
                 {**sample_record(), "cell_key": "cell-9", "seed": 7})
    parsed = []
    real_read = store.read_record
    monkeypatch.setattr(store, "read_record", lambda p: parsed.append(p) or real_read(p))
    summaries = load_summaries(tmp_path, "g")
    assert sorted(p.name for p in parsed) == ["seed0.json", "seed7.json"]  # seed2 from cache
    assert [(s["cell_key"], s["seed"]) for s in summaries] == [("cell-0", 0), ("cell-0", 2),
                                                                ("cell-9", 7)]
    assert summaries[0]["metrics"] == {"miou": 99.0}
    parsed.clear()
    assert load_summaries(tmp_path, "g") == summaries and parsed == []


def test_a_broken_cache_or_record_is_survived(tmp_path, capsys) -> None:
    paths = _write_grid(tmp_path)
    (tmp_path / "runs" / "g" / SUMMARY_CACHE).write_text("{not json")
    assert len(load_summaries(tmp_path, "g")) == 3
    paths[2].write_text('{"truncated": ')
    assert len(load_summaries(tmp_path, "g")) == 2
    assert "skipping unreadable record" in capsys.readouterr().out
    assert load_summaries(tmp_path, "missing-grid") == []
