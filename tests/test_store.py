"""The results store: atomic records, exact round trip, skipping finished runs."""

from __future__ import annotations

import json
import os

import pytest

from benchmark.config import Cell
from benchmark.launch import plan
from benchmark.store import is_done, load_records, read_record, record_path, write_record


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
