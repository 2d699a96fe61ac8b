"""Do a class's prototypes split along its appearance modes? (the generated smoke data only)

The smoke data paints every region in one of M appearance modes of its class
(benchmark/datasets/synthetic.py). Several prototypes per class can only help if the trained
embedding keeps a class's modes apart and its prototypes follow them. Per class, over the
evaluation pixels of that class, each assigned the nearest prototype of its true class: the
uncertainty coefficient U = I(mode; prototype) / H(mode), the share of the mode's entropy the
chosen prototype explains. 1: the prototype tells the mode; 0: it says nothing (always 0 with
K = 1). `mode_alignment.png|pdf`, from each prototype cell's final weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.config import Cell
from benchmark.report.aggregate import done_by_seed, method_labels
from benchmark.report.plots import first_trained_model, head_figure_vectors, save_figure
from benchmark.store import Record, ResultsLayout


def uncertainty_coefficient(joint: Tensor) -> float:
    """I(mode; prototype) / H(mode) of an (M, K) table of pixel counts; NaN without pixels or
    when only one mode occurs (nothing to explain)."""
    joint = joint.double()
    total = joint.sum()
    if total <= 0:
        return math.nan
    p = joint / total
    p_mode, p_proto = p.sum(1), p.sum(0)
    h_mode = -(p_mode[p_mode > 0] * p_mode[p_mode > 0].log()).sum()
    if h_mode <= 1e-12:
        return math.nan
    outer = p_mode[:, None] * p_proto[None, :]
    nz = p > 0
    mutual = (p[nz] * (p[nz] / outer[nz]).log()).sum()
    return float((mutual / h_mode).clamp(0.0, 1.0))


@torch.no_grad()
def mode_prototype_counts(model: torch.nn.Module, dataset: Any, num_modes: int,
                          num_images: int = 64, ignore_index: int = 255) -> Tensor:
    """(C, M, K) counts of evaluation pixels of class c in mode m whose nearest prototype of
    class c is k, at the embedding's resolution (labels and modes sampled by nearest)."""
    protos = model.head.prototype_vectors()
    if protos is None:
        raise ValueError(f"mode alignment needs a prototype head, got {type(model.head).__name__}")
    num_classes, k = protos.shape[:2]
    counts = torch.zeros(num_classes, num_modes, k, dtype=torch.long)
    model.eval()
    for i in range(min(num_images, len(dataset))):
        image, label, mode = dataset.sample(i)
        emb = model.head.pixel_embeddings(model.features(image[None]))[0].float()  # (D, h, w)
        size = emb.shape[-2:]
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
        mode = F.interpolate(mode[None, None].float(), size=size, mode="nearest")[0, 0].long()
        keep = label != ignore_index
        pixels = emb.flatten(1).T[keep.flatten()]  # (N, D)
        cls, mod = label[keep], mode[keep]
        nearest = torch.einsum("nd,nkd->nk", pixels, protos[cls].float()).argmax(1)
        flat = (cls * num_modes + mod) * k + nearest
        counts += torch.bincount(flat, minlength=counts.numel()).view_as(counts)
    return counts


def alignment_by_cell(cells: list[Cell], records: list[Record], layout: ResultsLayout,
                      log: Callable[[str], Any] = print) -> dict[str, list[float]]:
    """{method label: U per class} for each generated-data prototype cell whose first finished
    seed left its final weights; other cells are skipped with a note."""
    from benchmark.datasets import build_dataset

    done = done_by_seed(records)
    out: dict[str, list[float]] = {}
    for cell, label in zip(cells, method_labels(cells)):
        if (cell.data.name != "synthetic" or not done.get(cell.key)
                or not head_figure_vectors(cell.model.head.name)[1]):
            continue
        found = first_trained_model(cell, done[cell.key], layout, "the mode alignment", log)
        if found is None:
            continue
        model = found[1]
        val = build_dataset(cell.data, cell.data.val_split)
        counts = mode_prototype_counts(model, val, cell.data.modes_per_class,
                                       ignore_index=cell.data.ignore_index)
        out[label] = [uncertainty_coefficient(c) for c in counts]
        log(f"mode alignment {label}: mean U = {_nanmean(out[label]):.2f} over classes")
    return out


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def plot_mode_alignment(cells: list[Cell], records: list[Record], layout: ResultsLayout,
                        out_dir: Path, log: Callable[[str], Any] = print) -> list[Path]:
    """`mode_alignment.png|pdf`: grouped bars of U per class, one group member per cell."""
    data = alignment_by_cell(cells, records, layout, log)
    if not data:
        return []
    n_classes = max(len(v) for v in data.values())
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * n_classes + 2), 3.2))
    width = 0.8 / len(data)
    for i, (label, values) in enumerate(data.items()):
        xs = [c + (i - (len(data) - 1) / 2) * width for c in range(len(values))]
        ax.bar(xs, values, width, label=f"{label} (mean {_nanmean(values):.2f})")
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("class index")
    ax.set_title("Mode information in the chosen prototype, I(mode; prototype) / H(mode)",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_dir / "mode_alignment")
