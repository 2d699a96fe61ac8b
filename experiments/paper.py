"""The paper's published numbers, transcribed from its Tables 1-3 and ablations (docs/method.md).

Table 1: ADE20K val, Table 2: Cityscapes val, Table 3: COCO-Stuff-10K test (mIoU %, parameters
in millions as printed; the paper prints the same counts in all three tables). Grids take their
`paper_miou` / `paper_params_m` and reference rows from here.

Structures (plain data, no torch):

- `PAIRS[grid][pair]` -> `PairNumbers(method, venue, backbone, baseline_params, baseline_miou,
  ours_params, ours_miou)`; grid in {"table1", "table2", "table3"}, pair in
  {"fcn", "hrnet", "swin", "segformer"} (the `Cell.pair` of the grid's cells), in the paper's
  row order. `paper_numbers(grid, pair, tag)` returns `(params_m, miou)` for tag
  "baseline" or "ours".
- `REFERENCE_ROWS[grid]` -> list of dicts, the paper's comparison rows that this suite does not
  reproduce, in the paper's order:
  `{"method": str, "venue": str, "backbone": str, "params_m": float | None (millions; None
  where the paper prints "-"), "miou": float, "note": str ("" or the paper's footnote)}`
  (each paper grid carries its rows as `Grid.reference_rows`; benchmark/report/tables.py reads
  method, venue, backbone, params_m, miou and note). `reference_row(grid, method)`
  returns one of them (Table 2's ContrastiveSeg also has a reproduced cell, experiments/table2.py).
- `ABLATION_LOSS[name]` -> mIoU for name in ("ce", "ce+ppc", "ce+ppd", "ce+ppc+ppd") and
  `ABLATION_K[k]` -> mIoU for k in (1, 5, 10, 20, 50) (ADE20K val; backbone unverified,
  most likely SegFormer MiT-B2, docs/method.md#hyperparameters).
"""

from __future__ import annotations

from typing import NamedTuple


class PairNumbers(NamedTuple):
    """One baseline row of a paper table and the "Ours" row below it."""

    method: str
    venue: str
    backbone: str
    baseline_params: float
    baseline_miou: float
    ours_params: float
    ours_miou: float


PAIRS: dict[str, dict[str, PairNumbers]] = {
    "table1": {
        "fcn": PairNumbers("FCN", "CVPR15", "ResNet-101", 68.6, 39.9, 68.5, 41.1),
        "hrnet": PairNumbers("HRNet", "PAMI20", "HRNetV2-W48", 65.9, 42.0, 65.8, 43.0),
        "swin": PairNumbers("Swin", "ICCV21", "Swin-Base", 90.6, 48.0, 90.5, 48.6),
        "segformer": PairNumbers("SegFormer", "NeurIPS21", "MiT-B4", 64.1, 50.9, 64.0, 51.7),
    },
    "table2": {
        "fcn": PairNumbers("FCN", "CVPR15", "ResNet-101", 68.6, 78.1, 68.5, 79.1),
        "hrnet": PairNumbers("HRNet", "PAMI20", "HRNetV2-W48", 65.9, 80.4, 65.8, 81.1),
        "swin": PairNumbers("Swin", "ICCV21", "Swin-Base", 90.6, 79.8, 90.5, 80.6),
        "segformer": PairNumbers("SegFormer", "NeurIPS21", "MiT-B4", 64.1, 80.7, 64.0, 81.3),
    },
    "table3": {
        "fcn": PairNumbers("FCN", "CVPR15", "ResNet-101", 68.6, 32.5, 68.5, 34.0),
        "hrnet": PairNumbers("HRNet", "PAMI21", "HRNetV2-W48", 65.9, 38.7, 65.8, 39.9),
        "swin": PairNumbers("Swin", "ICCV21", "Swin-Base", 90.6, 41.5, 90.5, 42.4),
        "segformer": PairNumbers("SegFormer", "NeurIPS21", "MiT-B4", 64.1, 42.5, 64.0, 43.3),
    },
}


def _ref(method: str, venue: str, backbone: str, params_m: float | None, miou: float,
         note: str = "") -> dict:
    return {"method": method, "venue": venue, "backbone": backbone, "params_m": params_m,
            "miou": miou, "note": note}


REFERENCE_ROWS: dict[str, list[dict]] = {
    "table1": [
        _ref("DeepLabV3+", "ECCV18", "ResNet-101", 62.7, 44.1),
        _ref("OCR", "ECCV20", "HRNetV2-W48", 70.3, 45.6),
        _ref("MaskFormer", "NeurIPS21", "ResNet-101", 60.0, 46.0),
        _ref("UperNet", "ECCV20", "Swin-Base", 121.0, 48.4),
        _ref("OCR", "ECCV20", "HRFormer-B", 70.3, 48.7),
        _ref("SETR", "CVPR21", "ViT-Large", 318.3, 50.2),
        _ref("Segmenter", "ICCV21", "ViT-Large", 334.0, 51.8),
        _ref("MaskFormer", "NeurIPS21", "Swin-Base", 102.0, 52.7,
             "†: backbone pre-trained on ImageNet-22K"),
    ],
    "table2": [
        _ref("PSPNet", "CVPR17", "ResNet-101", 65.9, 78.4),
        _ref("PSANet", "ECCV18", "ResNet-101", None, 78.6),
        _ref("AAF", "ECCV18", "ResNet-101", None, 79.1),
        _ref("Segmenter", "ICCV21", "ViT-Large", 322.0, 79.1),
        _ref("ContrastiveSeg", "ICCV21", "ResNet-101", 58.0, 79.2),
        _ref("MaskFormer", "NeurIPS21", "ResNet-101", 60.0, 80.3),
        _ref("DeepLabV3+", "ECCV18", "ResNet-101", 62.7, 80.9),
        _ref("OCR", "ECCV20", "HRNetV2-W48", 70.3, 81.1),
    ],
    "table3": [
        _ref("SVCNet", "CVPR19", "ResNet-101", None, 39.6),
        _ref("DANet", "CVPR19", "ResNet-101", 69.1, 39.7),
        _ref("SpyGR", "CVPR20", "ResNet-101", None, 39.9),
        _ref("MaskFormer", "NeurIPS21", "ResNet-101", 60.0, 39.8),
        _ref("ACNet", "ICCV19", "ResNet-101", None, 40.1),
        _ref("OCR", "ECCV20", "HRNetV2-W48", 70.3, 40.5),
    ],
}

ABLATION_LOSS: dict[str, float] = {"ce": 45.0, "ce+ppc": 45.9, "ce+ppd": 45.4, "ce+ppc+ppd": 46.4}
ABLATION_K: dict[int, float] = {1: 45.5, 5: 46.0, 10: 46.4, 20: 46.5, 50: 46.4}


def reference_row(grid: str, method: str) -> dict:
    """The reference row of paper table `grid` whose method is `method` (exactly one)."""
    rows = [r for r in REFERENCE_ROWS[grid] if r["method"] == method]
    if len(rows) != 1:
        raise KeyError(f"{grid} has {len(rows)} reference rows named {method!r}; expected one")
    return rows[0]


def paper_numbers(grid: str, pair: str, tag: str) -> tuple[float, float]:
    """(params in M, mIoU in %) of the paper's baseline or "Ours" row of a pair."""
    row = PAIRS[grid][pair]
    if tag == "baseline":
        return row.baseline_params, row.baseline_miou
    if tag == "ours":
        return row.ours_params, row.ours_miou
    raise ValueError(f"tag must be 'baseline' or 'ours', got {tag!r}")
