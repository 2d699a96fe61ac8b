"""`table3`: the paper's Table 3 (COCO-Stuff-10K test, 171 classes), the four pairs.

Same networks as Table 1 (experiments/paper_models.py), 512x512 crops, 80K iterations.
"""

from __future__ import annotations

from experiments import Grid
from experiments.paper_models import paper_grid, paper_table_cells


def table3() -> Grid:
    return paper_grid("table3",
                      "paper Table 3: COCO-Stuff-10K test, 4 baselines vs ProtoSeg (171 classes)",
                      paper_table_cells("table3", "coco_stuff10k"))
