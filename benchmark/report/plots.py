"""Figures from run records and trained models (matplotlib, Agg backend: no display needed).

Record-based: per-class IoU of baseline vs ours, training loss and evaluation mIoU curves.
Model-based (the paper's analysis figures): pixel-prototype similarity maps of one class, one
map per prototype (Fig. 3), and a 2-D PCA projection of pixel embeddings and prototypes coloured
by class (Fig. 5). Every figure is saved as PNG and PDF with a fixed size (no tight bbox), so
its pixel size is `figure_size_px(...)`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from benchmark.config import Cell  # noqa: E402
from benchmark.report.aggregate import (  # noqa: E402
    done_by_seed,
    method_labels,
    pairs,
    per_class_iou,
)
from benchmark.store import Record, ResultsLayout  # noqa: E402
from methods.catalog import HEADS  # noqa: E402
from methods.heads.base import SegHead, downsample_labels  # noqa: E402

DPI = 100
PANEL_IN = 2.2  # side of one similarity-map panel, inches
MAX_MAP_COLUMNS = 6
BAR_SIZE_IN = (8.0, 4.0)
CURVES_SIZE_IN = (10.0, 4.0)
PROJECTION_SIZE_IN = (6.0, 5.0)
PROJECTIONS = ("pca",)


# --------------------------------------------------------------------------- saving


def figure_size_px(size_in: tuple[float, float], dpi: int = DPI) -> tuple[int, int]:
    """(width, height) in pixels of a PNG saved from a figure of `size_in` inches."""
    return round(size_in[0] * dpi), round(size_in[1] * dpi)


def save_figure(fig: Figure, stem: Path | str, dpi: int = DPI) -> list[Path]:
    """Write `<stem>.png` and `<stem>.pdf` (folders created), close the figure, return paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    try:
        for path in paths:
            fig.savefig(path, dpi=dpi, metadata={"CreationDate": None} if path.suffix == ".pdf"
                        else {"Software": None})
    finally:
        plt.close(fig)
    return paths


# --------------------------------------------------------------------------- record-based


def plot_per_class_iou(mean: pd.DataFrame, stem: Path | str, std: pd.DataFrame | None = None,
                       title: str = "Per-class IoU") -> list[Path]:
    """Grouped bars: one group per class (rows of `mean`), one bar per method (columns),
    with the std over seeds as error bars where it is known."""
    if mean.empty or mean.shape[1] == 0:
        raise ValueError("per-class IoU plot: no classes or no methods to plot; run the grid first")
    fig, ax = plt.subplots(figsize=BAR_SIZE_IN, dpi=DPI, layout="constrained")
    n_methods = mean.shape[1]
    width = 0.8 / n_methods
    x = list(range(len(mean.index)))
    for j, method in enumerate(mean.columns):
        err = None
        if std is not None and method in std and std[method].notna().any():
            err = std[method].fillna(0.0).to_numpy()
        ax.bar([i - 0.4 + width * (j + 0.5) for i in x], mean[method].fillna(0.0).to_numpy(),
               width, yerr=err, capsize=2, label=str(method))
    ax.set_xticks(x, [str(c) for c in mean.index], rotation=45 if len(x) > 8 else 0,
                  ha="right" if len(x) > 8 else "center")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, stem)


def curve_series(cells: list[Cell], records: list[Record]
                 ) -> list[tuple[str, int, list[dict[str, float]], float | None, int]]:
    """(method label, seed, history, final mIoU, last step) for every done run, grid order."""
    done = done_by_seed(records)
    out = []
    for cell, label in zip(cells, method_labels(cells)):
        for seed, rec in done.get(cell.key, {}).items():
            history = rec.history
            last = max((h["step"] for h in history), default=cell.train.iters - 1)
            out.append((label, seed, history, rec.miou, last))
    return out


def plot_training_curves(cells: list[Cell], records: list[Record],
                         stem: Path | str) -> list[Path]:
    """Left: training loss per logged step. Right: evaluation mIoU per step: the history's
    `val_miou` points (periodic evaluation, when the engine logs it) and the final mIoU."""
    series = curve_series(cells, records)
    if not series:
        raise ValueError("training-curves plot: no finished runs in the records; "
                         "run the grid first")
    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=CURVES_SIZE_IN, dpi=DPI, sharex=True,
                                           layout="constrained")
    colours = {label: f"C{i}" for i, label in enumerate(dict.fromkeys(s[0] for s in series))}
    for label, seed, history, final, last in series:
        colour = colours[label]
        name = label if seed == min(s[1] for s in series if s[0] == label) else None
        steps = [h["step"] for h in history if "loss" in h]
        ax_loss.plot(steps, [h["loss"] for h in history if "loss" in h], color=colour,
                     lw=1.2, label=name)
        evals = [(h["step"], h["val_miou"]) for h in history if h.get("val_miou") is not None]
        if evals:
            ax_miou.plot(*zip(*evals), color=colour, lw=1.2, marker=".", label=name)
            name = None
        if final is not None:
            ax_miou.plot([last], [final], color=colour, marker="o", ls="none", label=name)
    ax_loss.set(xlabel="step", ylabel="training loss (CE + head terms)", title="Training loss")
    ax_miou.set(xlabel="step", ylabel="mIoU (%)", title="Evaluation mIoU (o = final)")
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return save_figure(fig, stem)


# --------------------------------------------------------------------------- model-based


def _head_vectors(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """Unit pixel embeddings (B, D, h, w) and class vectors (C, K, D) of the model's head:
    a prototype head's embeddings and prototypes, or a linear classifier's input features and
    weight rows (one vector per class, for the parametric side of Fig. 5)."""
    vectors = model.head.class_vectors()  # a head without fixed class vectors refuses first
    return model.head.pixel_embeddings(model.features(images)), vectors


def head_figure_vectors(head_name: str) -> tuple[bool, bool]:
    """(fixed class vectors, prototypes) of a registered head: which model figures it has
    (embedding projection; similarity maps and mode alignment), asked of its hooks, not of its
    name. A head class that keeps SegHead's `class_vectors` (which refuses) or
    `prototype_vectors` (None) has no such vectors; a plugin head that implements them gets the
    figures too."""
    head = HEADS.get(head_name).load()
    return (head.class_vectors is not SegHead.class_vectors,
            head.prototype_vectors is not SegHead.prototype_vectors)


class _EvalMode:
    """Put a module in eval mode for a block and restore its previous mode afterwards."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.was_training = module, module.training

    def __enter__(self) -> nn.Module:
        self.module.eval()
        return self.module

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.was_training)


@torch.no_grad()
def similarity_maps(model: nn.Module, images: Tensor, class_index: int) -> Tensor:
    """Cosine similarity of every pixel to each of the K prototypes of `class_index`:
    (B, K, H, W), computed at feature resolution and upsampled bilinearly to the images."""
    protos = model.head.prototype_vectors()
    if protos is None:
        raise ValueError(f"similarity maps need a prototype head, got {type(model.head).__name__}")
    num_classes = protos.shape[0]
    if not 0 <= class_index < num_classes:
        raise ValueError(f"class_index {class_index} is outside [0, {num_classes})")
    with _EvalMode(model):
        emb = model.head.pixel_embeddings(model.features(images))
    maps = torch.einsum("bdhw,kd->bkhw", emb.float(), protos[class_index])
    return F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)


def display_image(image: Tensor) -> Tensor:
    """A normalised (3, H, W) image rescaled to [0, 1] for display, as (H, W, 3)."""
    img = image.detach().float().cpu()
    lo, hi = img.amin(), img.amax()
    return ((img - lo) / (hi - lo).clamp_min(1e-8)).permute(1, 2, 0)


def similarity_grid_shape(num_prototypes: int) -> tuple[int, int]:
    """(rows, columns) of panels: the image plus one panel per prototype."""
    panels = num_prototypes + 1
    cols = min(panels, MAX_MAP_COLUMNS)
    return math.ceil(panels / cols), cols


def similarity_figure_size_in(num_prototypes: int) -> tuple[float, float]:
    rows, cols = similarity_grid_shape(num_prototypes)
    return cols * PANEL_IN, rows * PANEL_IN


def plot_similarity_maps(model: nn.Module, image: Tensor, class_index: int, stem: Path | str,
                         class_name: str | None = None, label: Tensor | None = None
                         ) -> list[Path]:
    """Paper Fig. 3: the image (with the class's outline when `label` is given), then one
    pixel-prototype cosine-similarity map per prototype of `class_index`, all on one colour
    scale (the maps' common range) so the prototypes can be compared."""
    maps = similarity_maps(model, image[None], class_index)[0].cpu()
    k = maps.shape[0]
    rows, cols = similarity_grid_shape(k)
    fig, axes = plt.subplots(rows, cols, figsize=similarity_figure_size_in(k), dpi=DPI,
                             squeeze=False, layout="constrained")
    flat = axes.ravel()
    flat[0].imshow(display_image(image).numpy())
    name = class_name or f"class {class_index}"
    if label is not None and bool((label == class_index).any()):
        flat[0].contour((label == class_index).float().cpu().numpy(), levels=[0.5],
                        colors="white", linewidths=1.0)
    flat[0].set_title("image" if label is None else f"image, {name} outlined", fontsize="small")
    lo = float(maps.min())
    hi = max(float(maps.max()), lo + 1e-6)
    artist = None
    for i in range(k):
        artist = flat[i + 1].imshow(maps[i].numpy(), cmap="viridis", vmin=lo, vmax=hi)
        flat[i + 1].set_title(f"{name}: prototype {i + 1}", fontsize="small")
    for ax in flat:
        ax.axis("off")
    fig.colorbar(artist, ax=list(flat), shrink=0.8, label="cosine similarity")
    return save_figure(fig, stem)


@torch.no_grad()
def embedding_projection(model: nn.Module, images: Tensor, labels: Tensor, max_points: int = 2000,
                         method: str = "pca", seed: int = 0, ignore_index: int = 255
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """2-D coordinates of sampled labelled pixels (N, 2) with their classes (N,), and of the
    prototypes (C, K, 2), all projected with the principal axes of the pixel embeddings."""
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    with _EvalMode(model):
        emb, protos = _head_vectors(model, images)
    small = downsample_labels(labels, emb.shape[-2:]).reshape(-1)
    pixels = emb.float().permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
    keep = (small != ignore_index) & (small >= 0) & (small < protos.shape[0])
    pixels, small = pixels[keep], small[keep]
    if pixels.shape[0] < 2:
        raise ValueError("embedding projection: fewer than two labelled pixels in the images")
    if pixels.shape[0] > max_points:
        pick = torch.randperm(pixels.shape[0], generator=torch.Generator().manual_seed(seed))
        pick = pick[:max_points].to(pixels.device)
        pixels, small = pixels[pick], small[pick]
    centre = pixels.mean(dim=0)
    _, _, vh = torch.linalg.svd(pixels - centre, full_matrices=False)
    axes = vh[:2].t()  # (D, 2) principal axes
    points = (pixels - centre) @ axes
    proto_points = ((protos.reshape(-1, protos.shape[-1]) - centre) @ axes).reshape(
        protos.shape[0], protos.shape[1], 2)
    return points.cpu(), small.cpu(), proto_points.cpu()


def plot_embedding_projection(model: nn.Module, images: Tensor, labels: Tensor,
                              stem: Path | str, class_names: Sequence[str] | None = None,
                              max_points: int = 2000, method: str = "pca",
                              ignore_index: int = 255, max_classes: int = 10) -> list[Path]:
    """Paper Fig. 5: pixel embeddings (dots) and prototypes (stars) in 2-D, coloured by class;
    only the `max_classes` classes with the most sampled pixels are drawn (legible colours)."""
    points, classes, protos = embedding_projection(model, images, labels, max_points, method,
                                                   ignore_index=ignore_index)
    counts = torch.bincount(classes, minlength=protos.shape[0])
    shown = [int(c) for c in counts.argsort(descending=True)[:max_classes] if counts[c] > 0]
    fig, ax = plt.subplots(figsize=PROJECTION_SIZE_IN, dpi=DPI, layout="constrained")
    cmap = plt.get_cmap("tab10")
    for i, c in enumerate(sorted(shown)):
        colour = cmap(i % cmap.N)
        mine = points[classes == c]
        ax.scatter(mine[:, 0], mine[:, 1], s=4, alpha=0.4, color=colour)
        ax.scatter(protos[c, :, 0], protos[c, :, 1], s=160, marker="*", color=colour,
                   edgecolors="black", linewidths=0.8,
                   label=class_names[c] if class_names else f"class {c}")
    ax.set(xlabel="PC 1", ylabel="PC 2",
           title=f"Pixel embeddings (dots) and prototypes (stars), {method.upper()}")
    ax.legend(fontsize="small", loc="best")
    return save_figure(fig, stem)


# --------------------------------------------------------------------------- a grid's figures


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-") or "x"


def record_figures(cells: list[Cell], records: list[Record], out_dir: Path,
                   log: Callable[[str], Any] = print) -> list[Path]:
    """Per-class IoU (baseline vs ours per pair; all methods if the grid has no pair) and the
    training curves, from records alone; figures without data are skipped with a note."""
    paths: list[Path] = []
    mean, std = per_class_iou(cells, records)
    labels = dict(zip((c.key for c in cells), mean.columns))
    groups = [(f"per_class_iou_{_slug(pair)}", [base, ours], True)
              for pair, base, ours in pairs(cells)]
    for stem, group, need_all in groups or [("per_class_iou", cells, False)]:
        cols = [labels[c.key] for c in group if mean[labels[c.key]].notna().any()]
        if not cols or (need_all and len(cols) < len(group)):
            log(f"figures: skipping {stem}: {'not every' if need_all else 'no'} method in it "
                f"has a finished run with per-class IoU")
            continue
        paths += plot_per_class_iou(mean[cols], out_dir / stem, std[cols],
                                    title=f"Per-class IoU: {' vs '.join(cols)}")
    if curve_series(cells, records):
        paths += plot_training_curves(cells, records, out_dir / "training_curves")
    else:
        log("figures: skipping training_curves: no finished run")
    return paths


class StaleWeightsError(ValueError):
    """A weights file that is not the one the run's record describes."""


def load_trained_model(cell: Cell, weights: Path, expected_sha256: str | None = None) -> nn.Module:
    """The cell's model with the final weights of a run (CPU, eval mode); a file that does not
    match the record's weight hash raises StaleWeightsError (weights of another run)."""
    from benchmark.datasets import dataset_info
    from benchmark.checkpoints import weights_sha256
    from methods import build_model

    info = dataset_info(cell.data)
    model = build_model(cell.model, info.num_classes, cell.data.ignore_index)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    if expected_sha256 and weights_sha256(model) != expected_sha256:
        raise StaleWeightsError(f"{weights} does not match its record's weights_sha256; rerun "
                                f"the cell with --force to regenerate both")
    return model.eval()


def first_trained_model(cell: Cell, runs: dict[int, Record], layout: ResultsLayout,
                        what: str, log: Callable[[str], Any] = print
                        ) -> tuple[int, nn.Module] | None:
    """(seed, model) of the cell's first finished seed with its final weights (`runs`: the
    cell's finished records by seed); None, with a note naming `what` is skipped, when the
    weights are missing or are not the ones its record describes."""
    seed, rec = next(iter(runs.items()))
    weights = layout.final_weights(cell.grid, cell.key, seed)
    if not weights.exists():
        log(f"figures: skipping {what} of {cell.row!r}: no weights at {weights}")
        return None
    try:
        return seed, load_trained_model(cell, weights, rec.weights_sha256)
    except StaleWeightsError as err:
        log(f"figures: skipping {what} of {cell.row!r}: {err}")
        return None


def model_figures(cells: list[Cell], records: list[Record], layout: ResultsLayout,
                  out_dir: Path, num_images: int = 4, log: Callable[[str], Any] = print
                  ) -> list[Path]:
    """Similarity maps (heads with prototypes) and embedding projections (heads with fixed class
    vectors: prototype, softmax, pixel contrast; `head_figure_vectors`) of the first
    `num_images` evaluation images, from each cell's first finished seed whose final weights
    exist and match its record; other cells are skipped with a note."""
    from benchmark.datasets import build_dataset, dataset_info

    done = done_by_seed(records)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    paths: list[Path] = []
    for cell in cells:
        if not done.get(cell.key) or not head_figure_vectors(cell.model.head.name)[0]:
            continue  # a head without fixed class vectors (pixel-query) has no such figures
        if (found := first_trained_model(cell, done[cell.key], layout,
                                         "the embedding figures", log)) is None:
            continue
        seed, model = found[0], found[1].to(device)
        info = dataset_info(cell.data)
        val = build_dataset(cell.data, cell.data.val_split)
        samples = [val[i] for i in range(min(num_images, len(val)))]
        samples = [p for p in samples if p[0].shape == samples[0][0].shape]  # one batch, one size
        images = torch.stack([p[0] for p in samples]).to(device)
        labels = torch.stack([p[1] for p in samples]).to(device)
        stem = f"{cell.key}_seed{seed}"
        if model.head.prototype_vectors() is not None:  # a head with prototypes
            present = labels[0][labels[0] != cell.data.ignore_index]
            counts = torch.bincount(present, minlength=info.num_classes)
            cls = int(counts.argmax())  # the class covering most of the first image
            paths += plot_similarity_maps(model, images[0], cls, out_dir / f"similarity_{stem}",
                                          class_name=info.class_names[cls], label=labels[0])
        paths += plot_embedding_projection(model, images, labels, out_dir / f"embedding_{stem}",
                                           info.class_names, ignore_index=cell.data.ignore_index)
    return paths
