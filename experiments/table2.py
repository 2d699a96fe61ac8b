"""`table2`: the paper's Table 2 (Cityscapes val, 19 classes), the four baseline/ours pairs.

Same networks as Table 1 (experiments/table1.py); CNNs use the released ProtoSeg recipe
(512x1024 crops, 80K iterations), transformers MMSeg's SegFormer recipe (1024x1024, 160K).
"""

from __future__ import annotations

from experiments import Grid
from experiments.table1 import paper_table_cells


def table2() -> Grid:
    return Grid("table2", "paper Table 2: Cityscapes val, 4 baselines vs ProtoSeg (19 classes)",
                paper_table_cells("table2", "cityscapes"), seeds=1)
