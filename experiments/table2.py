"""`table2`: the paper's Table 2 (Cityscapes val, 19 classes), the four baseline/ours pairs, and
an optional extra row: ContrastiveSeg (ICCV 2021), ProtoSeg's predecessor, which the paper lists
as a reference (ResNet-101, 79.2).

Same networks as Table 1 (experiments/paper_models.py). Recipes (docs/fidelity.md): FCN
MMSeg's fcn_r101-d8 Cityscapes config (512x1024, 80K), HRNet the released ProtoSeg recipe
(512x1024, 80K), the transformers MMSeg's SegFormer Cityscapes recipe (1024x1024, 160K,
sliding windows).
The ContrastiveSeg row is the FCN pair's network and recipe with the `pixel_contrast` head
(in-batch contrast, the released defaults): it belongs to no pair (its own tag), so the pairs'
comparisons are unchanged, and it shows the loss on the same network as FCN and Ours (FCN).
The paper's 79.2 comes from DeepLabV3 (ASPP) on ResNet-101, a decoder this suite does not have;
the paper's 58.0M is that network's count, so the cell carries the mIoU only (its count stays
on the reference row).
"""

from __future__ import annotations

from dataclasses import replace

from benchmark.config import Cell, HeadSpec
from experiments import Grid
from experiments.paper import reference_row
from experiments.paper_models import paper_grid, paper_table_cells


def contrastive_seg_cell(cells: tuple[Cell, ...]) -> Cell:
    """The FCN baseline of `cells` with ContrastiveSeg's head, beside the paper's mIoU."""
    fcn = next(c for c in cells if c.pair == "fcn" and c.tag == "baseline")
    ref = reference_row("table2", "ContrastiveSeg")
    return replace(fcn, row=ref["method"], tag="", pair="", paper_miou=ref["miou"],
                   paper_params_m=None,
                   model=replace(fcn.model, head=HeadSpec(name="pixel_contrast")))


def table2() -> Grid:
    cells = paper_table_cells("table2", "cityscapes")
    return paper_grid("table2", "paper Table 2: Cityscapes val, 4 baselines vs ProtoSeg "
                      "(19 classes), and ContrastiveSeg", cells + (contrastive_seg_cell(cells),))
