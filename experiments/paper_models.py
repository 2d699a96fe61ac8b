"""The networks of the paper's Tables 1-3 and the builder every one of those tables shares.

Each of the four pairs is one published baseline (softmax classifier) and the same network with
ProtoSeg's prototype head in the paper's parameter convention (`projection=none`: the "Ours"
count is the baseline minus its classifier; the released HRNet code's 1.04M projection MLP is
`--set model.head.projection=mlp`). Models and their decoders follow docs/method.md; each cell
carries the named recipe of its data set and model family (experiments/recipes.py), and the
paper's numbers (experiments/paper.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from benchmark.config import Cell, HeadSpec, ModelSpec
from benchmark.stats import planned_seeds
from experiments import Grid
from experiments.paper import PAIRS, REFERENCE_ROWS, paper_numbers
from experiments.recipes import recipe_for, recipe_specs


@dataclass(frozen=True)
class PaperModel:
    """One baseline network of Tables 1-3."""

    pair: str  # fcn | hrnet | swin | segformer (the Cell.pair of its two cells)
    family: str  # cnn | transformer: picks the recipe
    model: ModelSpec  # the baseline (softmax classifier)


PAPER_MODELS: tuple[PaperModel, ...] = (
    PaperModel("fcn", "cnn", ModelSpec(backbone="resnet101_d8", decoder="fcn",
                                       decoder_channels=512, aux_weight=0.4, init="mmseg")),
    PaperModel("hrnet", "cnn", ModelSpec(backbone="hrnetv2_w48", decoder="hrnetv2",
                                         decoder_channels=720, init="mmseg")),
    PaperModel("swin", "transformer", ModelSpec(backbone="swin_b", decoder="mlp",
                                                decoder_channels=768, init="mmseg")),
    PaperModel("segformer", "transformer", ModelSpec(backbone="mit_b4", decoder="mlp",
                                                     decoder_channels=768, init="mmseg")),
)

# ProtoSeg's head in the paper's parameter convention (no projection MLP; K = 10).
OURS_HEAD = HeadSpec(name="prototype", projection="none")


def ours(model: ModelSpec) -> ModelSpec:
    """The baseline with its softmax classifier replaced by ProtoSeg's prototype head."""
    return replace(model, head=OURS_HEAD)


def paper_table_cells(grid: str, data: str) -> tuple[Cell, ...]:
    """Baseline and "Ours" cells of the four pairs of paper table `grid` on data set `data`."""
    cells = []
    for pm in PAPER_MODELS:
        numbers = PAIRS[grid][pm.pair]
        specs = recipe_specs(recipe_for(data, pm.pair), data)
        for tag, row, model in (("baseline", numbers.method, pm.model),
                                ("ours", f"Ours ({numbers.method})", ours(pm.model))):
            params, miou = paper_numbers(grid, pm.pair, tag)
            cells.append(Cell(grid=grid, row=row, column=numbers.backbone, tag=tag,
                              pair=pm.pair, paper_miou=miou, paper_params_m=params,
                              model=model, **specs))
    return tuple(cells)


def paper_grid(name: str, description: str, cells: tuple[Cell, ...]) -> Grid:
    """A paper table as a grid: its cells, the paper layout and reference rows, and by default
    the seeds per cell that detect its smallest paper gain at 80% power (per-run sigma 0.5
    mIoU; benchmark/launch/seeds.py): one seed cannot tell a +0.6 gain from noise."""
    return Grid(name, description, cells, seeds=planned_seeds(cells), layout="paper",
                reference_rows=tuple(REFERENCE_ROWS[name]))
