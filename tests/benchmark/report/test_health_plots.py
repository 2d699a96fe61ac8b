"""The prototype-health figure: per-class means over seeds from records; skipped (with a note)
when no run recorded health."""

from __future__ import annotations

import math

import pytest

from benchmark.config import Cell, HeadSpec, ModelSpec
from benchmark.report.health_plots import health_by_cell, plot_prototype_health
from benchmark.store import Record

PROTO = Cell(grid="g", row="Prototype", model=ModelSpec(head=HeadSpec(name="prototype")))
SOFTMAX = Cell(grid="g", row="Softmax")


def _record(cell: Cell, seed: int, cosine: list, entropy: list) -> Record:
    health = {"per_class": {"pairwise_cosine": cosine, "entropy": entropy}, "summary": {}}
    return Record(status="done", grid="g", cell_key=cell.key, seed=seed,
                  metrics={"miou": 50.0, "prototype_health": health}, params={"learnable": 1},
                  timings={"train_s": 1.0})


def test_health_is_averaged_over_seeds_per_class(tmp_path) -> None:
    records = [_record(PROTO, 0, [0.2, 0.9, None], [1.0, 0.5, None]),
               _record(PROTO, 1, [0.4, 0.7, None], [0.8, 0.5, None]),
               Record(status="done", grid="g", cell_key=SOFTMAX.key, seed=0,
                      metrics={"miou": 40.0}, params={"learnable": 1}, timings={"train_s": 1})]
    data = health_by_cell([SOFTMAX, PROTO], records)
    assert list(data) == ["Prototype"]
    assert data["Prototype"]["pairwise_cosine"][:2] == pytest.approx([0.3, 0.8])
    assert data["Prototype"]["entropy"][:2] == pytest.approx([0.9, 0.5])
    assert math.isnan(data["Prototype"]["entropy"][2])  # a class no seed saw
    paths = plot_prototype_health([SOFTMAX, PROTO], records, tmp_path)
    assert [p.name for p in paths] == ["prototype_health.png", "prototype_health.pdf"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_no_health_no_figure(tmp_path) -> None:
    notes: list[str] = []
    assert plot_prototype_health([SOFTMAX], [], tmp_path, notes.append) == []
    assert "skipping prototype_health" in notes[0]
