"""The prototype-health figure of a grid: per class, how alike a class's prototypes are (mean
pairwise cosine; 1 = collapsed) and how evenly its pixels use them (assignment entropy / log K),
for every prototype cell, averaged over its finished seeds (records' `metrics.prototype_health`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import matplotlib.pyplot as plt

from benchmark.config import Cell
from benchmark.report.aggregate import done_by_seed, method_labels
from benchmark.report.plots import save_figure
from benchmark.store import Record

STATS = (("pairwise_cosine", "Mean cosine between a class's prototypes (1 = collapsed)"),
         ("entropy", "Assignment entropy / log K (1 = prototypes used evenly)"))


def _mean(values: list[Any]) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else math.nan


def health_by_cell(cells: list[Cell], records: list[Record]) -> dict[str, dict[str, list[float]]]:
    """{method label: {statistic: per-class mean over seeds}} for cells whose runs recorded
    prototype health."""
    done = done_by_seed(records)
    out: dict[str, dict[str, list[float]]] = {}
    for cell, label in zip(cells, method_labels(cells)):
        healths = [r.metrics.prototype_health for r in done.get(cell.key, {}).values()]
        healths = [h for h in healths if h]
        if not healths:
            continue
        per_class = [h["per_class"] for h in healths]
        out[label] = {name: [_mean(list(v)) for v in zip(*(p[name] for p in per_class))]
                      for name, _ in STATS}
    return out


def plot_prototype_health(cells: list[Cell], records: list[Record], out_dir: Path,
                          log: Callable[[str], Any] = print) -> list[Path]:
    """`prototype_health.png|pdf`: one panel per statistic, grouped bars per class."""
    data = health_by_cell(cells, records)
    if not data:
        log("figures: skipping prototype_health: no finished run recorded prototype health")
        return []
    n_classes = max(len(v[STATS[0][0]]) for v in data.values())
    fig, axes = plt.subplots(len(STATS), 1, figsize=(max(6.0, 0.5 * n_classes + 2), 6.0),
                             sharex=True)
    width = 0.8 / len(data)
    for ax, (name, title) in zip(axes, STATS):
        for i, (label, stats) in enumerate(data.items()):
            xs = [c + (i - (len(data) - 1) / 2) * width for c in range(len(stats[name]))]
            ax.bar(xs, stats[name], width, label=label)
        ax.set_title(title, fontsize=9)
        lowest = min((v for stats in data.values() for v in stats[name] if math.isfinite(v)),
                     default=0.0)
        ax.set_ylim(min(0.0, lowest) - 0.05, 1.05)  # cosines can be negative
    axes[-1].set_xlabel("class index")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_dir / "prototype_health")
