"""`ablation_loss` and `ablation_k`: the paper's two ablations on ADE20K val.

Model: ProtoSeg's prototype head (paper convention, no projection MLP) on SegFormer MiT-B2 with
the all-MLP decoder (768 ch). The paper does not name the ablations' backbone; MiT-B2 is the
likely one (its MMSeg baseline, about 46.5, matches the ablations' range;
docs/method.md#hyperparameters, *unverified*). Recipe: `ade20k_segformer_160k`.

- ablation_loss: CE only, CE + PPC, CE + PPD, CE + PPC + PPD (K = 10). "CE" is the baseline
  and the full objective "ours" of pair `loss`.
- ablation_k: K = 1, 5, 10, 20, 50 prototypes per class (all losses).
"""

from __future__ import annotations

from dataclasses import replace

from benchmark.config import Cell, HeadSpec, ModelSpec
from benchmark.stats import planned_seeds
from experiments import Grid
from experiments.paper import ABLATION_K, ABLATION_LOSS
from experiments.recipes import RECIPES, recipe_specs
from experiments.paper_models import OURS_HEAD

ABLATION_MODEL = ModelSpec(backbone="mit_b2", decoder="mlp", decoder_channels=768, head=OURS_HEAD,
                           init="mmseg")
RECIPE = RECIPES["ade20k_segformer_160k"]
COLUMN = "MiT-B2"

# name -> (row label, PPC on, PPD on, tag)
LOSSES = {
    "ce": ("CE", False, False, "baseline"),
    "ce+ppc": ("CE + PPC", True, False, ""),
    "ce+ppd": ("CE + PPD", False, True, ""),
    "ce+ppc+ppd": ("CE + PPC + PPD", True, True, "ours"),
}


def _cell(grid: str, row: str, head: HeadSpec, paper: float, tag: str = "") -> Cell:
    return Cell(grid=grid, row=row, column=COLUMN, tag=tag, pair="loss" if tag else "",
                paper_miou=paper, model=replace(ABLATION_MODEL, head=head),
                **recipe_specs(RECIPE, "ade20k"))


def ablation_loss() -> Grid:
    cells = []
    for name, (row, ppc, ppd, tag) in LOSSES.items():
        head = replace(OURS_HEAD, ppc_weight=OURS_HEAD.ppc_weight if ppc else 0.0,
                       ppd_weight=OURS_HEAD.ppd_weight if ppd else 0.0)
        cells.append(_cell("ablation_loss", row, head, ABLATION_LOSS[name], tag))
    return Grid("ablation_loss", "paper loss ablation: CE, +PPC, +PPD, both (ADE20K, MiT-B2)",
                tuple(cells), seeds=planned_seeds(cells), layout="loss")


def ablation_k() -> Grid:
    cells = tuple(
        _cell("ablation_k", f"K={k}", replace(OURS_HEAD, num_prototypes=k), miou)
        for k, miou in ABLATION_K.items()
    )
    return Grid("ablation_k", "paper ablation of K prototypes per class (ADE20K, MiT-B2)",
                cells, seeds=planned_seeds(cells), layout="k")
