"""Every figure of a grid (`--figures`): the record figures and the model figures of plots.py,
prototype health (health_plots.py) and mode alignment (mode_alignment.py), which build on
plots.py; composing them here keeps the imports one way."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from benchmark.config import Cell
from benchmark.report.health_plots import plot_prototype_health
from benchmark.report.mode_alignment import plot_mode_alignment
from benchmark.report.plots import model_figures, record_figures
from benchmark.store import Record, ResultsLayout


def render_figures(grid: str, cells: list[Cell], records: list[Record],
                   layout: ResultsLayout, log: Callable[[str], Any] = print) -> list[Path]:
    """All figures of a grid into `<results>/figures/<grid>/` (PNG + PDF); returns the paths."""
    out_dir = layout.figures(grid)
    paths = record_figures(cells, records, out_dir, log)
    paths += model_figures(cells, records, layout, out_dir, log=log)
    paths += plot_prototype_health(cells, records, out_dir, log)
    return paths + plot_mode_alignment(cells, records, layout, out_dir, log)
