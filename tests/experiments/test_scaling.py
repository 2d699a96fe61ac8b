"""The CPU grids' step-count settings follow their schedules by one rule (scaling.py)."""

from __future__ import annotations

import pytest

from experiments import get_grid
from experiments.scaling import contrast_warmup, momentum_horizon, prototype_momentum


def test_the_rule_gives_an_eighth_of_the_schedule() -> None:
    assert momentum_horizon(800) == 100 and prototype_momentum(800) == 0.99
    assert prototype_momentum(240) == pytest.approx(1 - 1 / 30, abs=1e-6)
    assert contrast_warmup(800) == 100 and contrast_warmup(240) == 30
    assert momentum_horizon(4) == 1 and prototype_momentum(4) == 0.0  # never below one step


@pytest.mark.parametrize("grid", ["smoke", "camvid", "discrepancies_camvid"])
def test_cpu_grids_scale_momentum_and_warm_up_to_their_schedule(grid: str) -> None:
    for cell in get_grid(grid).cells:
        head, iters = cell.model.head, cell.train.iters
        if head.name == "prototype":
            assert head.gamma == prototype_momentum(iters), cell.row
            # the initialisation's weight after the schedule: gamma^iters, about e^-8
            assert head.gamma ** iters < 1e-3, cell.row
        if head.name == "pixel_contrast":
            assert head.contrast_warmup_iters == contrast_warmup(iters), cell.row
