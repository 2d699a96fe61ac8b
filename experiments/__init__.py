"""Grids: each paper table (or smoke/CPU study) as a plain list of cells."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from benchmark.config import Cell, ConfigError


@dataclass(frozen=True)
class Grid:
    """A named list of cells and how many seeds each gets by default."""

    name: str
    description: str
    cells: tuple[Cell, ...]
    seeds: int = 1


def _registry() -> dict[str, Callable[[], Grid]]:
    from experiments.smoke import smoke

    return {"smoke": smoke}


def grid_names() -> list[str]:
    return list(_registry())


def get_grid(name: str) -> Grid:
    """The grid called `name`, or a ConfigError listing the valid names."""
    registry = _registry()
    if name not in registry:
        raise ConfigError(f"unknown grid {name!r}; valid grids: {', '.join(registry)}")
    return registry[name]()
