"""`table1`: the paper's Table 1 (ADE20K val, 150 classes), the four baseline/ours pairs of
experiments/paper_models.py beside the paper's numbers and reference rows."""

from __future__ import annotations

from benchmark.config import ModelSpec
from experiments import Grid
from experiments.paper_models import paper_grid, paper_table_cells

# Table 1's reference row "UperNet, Swin-Base, 121.0M": buildable, not part of the grid.
UPERNET_SWIN_B = ModelSpec(backbone="swin_b", decoder="upernet", decoder_channels=512,
                           aux_weight=0.4, init="mmseg")


def table1() -> Grid:
    return paper_grid("table1", "paper Table 1: ADE20K val, 4 baselines vs ProtoSeg (150 classes)",
                      paper_table_cells("table1", "ade20k"))
