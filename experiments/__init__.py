"""Grids: each paper table (or smoke/CPU study) as a plain list of cells."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from benchmark.config import Cell, ConfigError


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


def _registry() -> dict[str, Callable[[], Grid]]:
    from experiments.ablations import ablation_k, ablation_loss
    from experiments.camvid import camvid
    from experiments.discrepancies import discrepancies, discrepancies_camvid
    from experiments.smoke import smoke
    from experiments.table1 import table1
    from experiments.table2 import table2
    from experiments.table3 import table3
    from experiments.zoo import zoo

    return {"smoke": smoke, "table1": table1, "table2": table2, "table3": table3,
            "ablation_loss": ablation_loss, "ablation_k": ablation_k, "camvid": camvid, "zoo": zoo,
            "discrepancies": discrepancies, "discrepancies_camvid": discrepancies_camvid}


def grid_names() -> list[str]:
    return list(_registry())


def get_grid(name: str) -> Grid:
    """The grid called `name`, or a ConfigError listing the valid names."""
    registry = _registry()
    if name not in registry:
        raise ConfigError(f"unknown grid {name!r}; valid grids: {', '.join(registry)}")
    return registry[name]()
