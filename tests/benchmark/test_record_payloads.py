"""The typed record payloads (benchmark/records.py): the committed records parse into them with
their numbers unchanged and are written back byte for byte; unknown keys and stored nulls
survive a round trip; payloads given as dicts (from disk, from tests) still work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from record_fixtures import consistent

from benchmark.records import Memory, Metrics, Params, Provenance, Timings
from benchmark.store import (PROVENANCE_KEYS, RECORD_SCHEMA, Record, read_record,
                             write_record)

RUNS = Path(__file__).resolve().parents[2] / "results" / "runs"
COMMITTED = sorted(p for grid in ("camvid", "discrepancies_camvid")
                   for p in (RUNS / grid).glob("*/seed*.json"))
DEFAULTS = {"kind": "trained", "traceback": None, "plugins": [], "provenance": {}}


def upgraded(data: dict) -> dict:
    """What today's writer makes of a stored record: schema 1's top-level provenance nested,
    the fields an older writer left out at their defaults, the schema number current."""
    out = {**DEFAULTS, **data, "schema": RECORD_SCHEMA}
    moved = {k: out.pop(k) for k in PROVENANCE_KEYS if k in out}
    out["provenance"] = {**moved, **out["provenance"]}
    return out


def test_the_schema_is_unchanged_by_the_typed_payloads() -> None:
    assert RECORD_SCHEMA == 2  # the JSON shape did not change (see store.RECORD_SCHEMA)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.parent.name}/"
                                                           f"{p.parent.name[:12]}/{p.stem}")
def test_a_committed_record_parses_typed_with_its_numbers(path: Path) -> None:
    data = json.loads(path.read_text())
    record = read_record(path)
    assert isinstance(record.metrics, Metrics) and isinstance(record.params, Params)
    assert isinstance(record.timings, Timings) and isinstance(record.memory, Memory)
    assert isinstance(record.provenance, Provenance)
    assert record.metrics.miou == record.miou == data["metrics"]["miou"]
    assert record.metrics.per_class_iou == data["metrics"]["per_class_iou"]
    assert record.params.learnable == data["params"]["learnable"]
    assert record.timings.train_s == data["timings"]["train_s"]
    assert record.provenance.git_commit == (data.get("provenance") or data)["git_commit"]
    assert not any(p.extra for p in (record.metrics, record.params, record.timings,
                                     record.memory, record.provenance))  # every key known


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.parent.name}/"
                                                           f"{p.parent.name[:12]}/{p.stem}")
def test_a_committed_record_is_written_back_byte_for_byte(path: Path, tmp_path: Path) -> None:
    """Read -> write gives the file's bytes, apart from what the upgrade fills in (schema 1:
    provenance nested; fields an older writer left out; the schema number)."""
    data = json.loads(path.read_text())
    expected = json.dumps(upgraded(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
    written = write_record(tmp_path / "seed0.json", read_record(path)).read_text()
    assert written == expected
    if data["schema"] == RECORD_SCHEMA and "plugins" in data:
        assert written == path.read_text()


def test_unknown_keys_and_stored_nulls_survive_a_round_trip(tmp_path: Path) -> None:
    metrics = {**consistent(30.0)["metrics"], "boundary_iou": 12.5}  # a newer version's metric
    data = {"schema": 2, "status": "done", "grid": "g", "cell_key": "k", "seed": 0,
            "metrics": metrics, "confusion": consistent(30.0)["confusion"],
            "params": {"learnable": 5, "total": 6, "frozen": 1},
            "timings": {"train_s": 0.0, "step_s_median": None, "train_img_per_s": None},
            "memory": {"device": "cpu", "peak_bytes": 1, "note": "n", "swap_bytes": 0},
            "provenance": {"git_commit": "abc", "host": "old-host"}}
    path = write_record(tmp_path / "seed0.json", data)
    record = read_record(path)
    assert record.metrics.extra == {"boundary_iou": 12.5} and record.metrics.miou == 30.0
    assert record.params.extra == {"frozen": 1} and record.provenance.extra == {"host": "old-host"}
    assert record.timings.step_s_median is None and "step_s_median" in record.timings.nulls
    again = read_record(write_record(tmp_path / "again.json", record))
    assert again.to_json() == record.to_json()
    for name in ("metrics", "params", "timings", "memory", "provenance"):
        assert again.to_json()[name] == data[name], name


def test_absent_fields_stay_absent() -> None:
    """A field never set is left out (a published evaluation has three timings, a softmax run
    no prototype health), not written as null."""
    assert Timings(train_s=0.0, eval_s=1.5).to_json() == {"train_s": 0.0, "eval_s": 1.5}
    assert "prototype_health" not in Metrics(miou=1.0).to_json()
    assert Metrics().to_json() == {} and Provenance().to_json() == {}


def test_dict_payloads_still_work(tmp_path: Path) -> None:
    """Payloads as their JSON objects (a record read from disk, a test's Record(...)) are typed
    on construction; the written JSON is the same either way."""
    given = {**consistent(40.0), "params": {"learnable": 7, "total": 8},
             "timings": {"train_s": 2.0}, "memory": {"device": "cpu", "peak_bytes": 3},
             "provenance": {"git_commit": "abc", "versions": {"torch": "2"}}}
    from_dicts = Record(status="done", cell_key="k", seed=0, **given)
    typed = Record(status="done", cell_key="k", seed=0, confusion=given["confusion"],
                   metrics=Metrics.from_dict(given["metrics"]), params=Params(learnable=7, total=8),
                   timings=Timings(train_s=2.0), memory=Memory(device="cpu", peak_bytes=3),
                   provenance=Provenance(git_commit="abc", versions={"torch": "2"}))
    assert from_dicts == typed and from_dicts.to_json() == typed.to_json()
    assert from_dicts.params.learnable == 7 and from_dicts.timings.train_s == 2.0
    path = write_record(tmp_path / "seed0.json", {**from_dicts.to_json(), "seed": 0})
    assert read_record(path) == typed
    assert {k: from_dicts.to_json()[k] for k in given} == given
