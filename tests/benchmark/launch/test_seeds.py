"""Seed planning: paper gains per pair, measured sigma, and the dry run's plan for every grid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.config import Cell
from benchmark.launch.seeds import measured_sigma, seed_plan
from benchmark.stats import paper_gains, planned_seeds
from benchmark.stats import seeds_for_gain
from benchmark.store import Record
from experiments import get_grid, grid_names

ROOT = Path(__file__).resolve().parents[3]
PAPER_GRIDS = ("table1", "table2", "table3", "ablation_loss", "ablation_k")


def _cells() -> list[Cell]:
    return [Cell(grid="g", row="A", column="X", tag="baseline", pair="a", paper_miou=40.0),
            Cell(grid="g", row="A+", column="X", tag="ours", pair="a", paper_miou=41.0),
            Cell(grid="g", row="B", column="Y", tag="baseline", pair="b", paper_miou=50.0),
            Cell(grid="g", row="B+", column="Y", tag="ours", pair="b", paper_miou=50.6)]


def _record(key: str, seed: int, miou: float, train_s: float = 3600.0) -> Record:
    return Record(status="done", grid="g", cell_key=key, seed=seed, metrics={"miou": miou},
                  params={"learnable": 1}, timings={"train_s": train_s, "eval_s": 0.0},
                  world_size=2)


def test_paper_gains_and_planned_seeds():
    gains = paper_gains(_cells())
    assert [(g.pair, round(g.gain, 6)) for g in gains] == [("a", 1.0), ("b", 0.6)]
    assert planned_seeds(_cells()) == seeds_for_gain(0.6) == 13  # the smallest gain decides


def test_sigma_is_pooled_over_cells_with_three_seeds():
    records = [_record("k1", s, v) for s, v in enumerate((40.0, 41.0, 42.0))]  # sd 1
    records += [_record("k2", s, v) for s, v in enumerate((50.0, 52.0, 54.0))]  # sd 2
    records += [_record("k3", 0, 10.0)]  # one seed: not used
    sigma, runs = measured_sigma(records)
    assert runs == 6 and sigma == pytest.approx((2 * 1 + 2 * 4) ** 0.5 / 2)  # sqrt(10 / 4)
    assert measured_sigma(records[-1:]) is None


def test_plan_lines_name_sigma_seeds_and_cost():
    lines = seed_plan(_cells(), [_record("k", 0, 40.0)], grid_seeds=3)
    text = "\n".join(lines)
    assert "sigma 0.50 mIoU (prior)" in text and "+1.0 -> 7 seeds" in text
    assert "13 seeds per cell" in text and "52 runs" in text and "10 short of it" in text
    assert "about 104 device-hours at the measured 2.00 h per run" in text  # 1 h x 2 processes
    assert "(--sigma)" in "\n".join(seed_plan(_cells(), [], 1, sigma=1.0))


def test_paper_grids_default_to_their_planned_seeds():
    for name in PAPER_GRIDS:
        grid = get_grid(name)
        assert grid.seeds == planned_seeds(grid.cells) >= 5, name


def test_dry_run_prints_a_seed_plan_for_every_grid():
    out = subprocess.run([sys.executable, "run_all.py", *sum((["--grid", g] for g in
                          grid_names() if g != "zoo"), []), "--dry-run", "--results", "/nonexistent"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("seed plan: 80% power") == len(grid_names()) - ("zoo" in grid_names())
