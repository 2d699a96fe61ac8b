"""Grids: each paper table (or smoke/CPU study) as a plain list of cells."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmark.config import Cell, ConfigError
from methods.registry import Registry, RegistryError


@dataclass(frozen=True)
class Grid:
    """A named list of cells, how many seeds each gets by default, and how its table looks:
    `layout` (`paper`: Tables 1-3; `loss` / `k`: the two ablations; `switches`: one setting
    changed per cell, experiments/discrepancies.py) and `reference_rows`, the
    paper's rows this suite quotes without reproducing (experiments/paper.py REFERENCE_ROWS)."""

    name: str
    description: str
    cells: tuple[Cell, ...]
    seeds: int = 1
    layout: str = "paper"  # checked where the table is drawn (benchmark/report/tables.py)
    reference_rows: tuple[dict[str, Any], ...] = ()


GRIDS = Registry("grid")  # name -> function returning the Grid; plugins: protoseg_bench.grids
for _name in ("smoke", "table1", "table2", "table3"):
    GRIDS.register(_name, f"experiments.{_name}:{_name}")
GRIDS.register("ablation_loss", "experiments.ablations:ablation_loss")
GRIDS.register("ablation_k", "experiments.ablations:ablation_k")
GRIDS.register("camvid", "experiments.camvid:camvid")
GRIDS.register("zoo", "experiments.zoo:zoo")
GRIDS.register("discrepancies", "experiments.discrepancies:discrepancies")
GRIDS.register("discrepancies_camvid", "experiments.discrepancies:discrepancies_camvid")


def grid_names() -> list[str]:
    return list(GRIDS.names())


def get_grid(name: str) -> Grid:
    """The grid called `name`, or a ConfigError listing the valid names."""
    try:
        entry = GRIDS.get(name)
    except RegistryError:
        raise ConfigError(f"unknown grid {name!r}; valid grids: {', '.join(GRIDS.names())}"
                          ) from None
    return entry.load()()
