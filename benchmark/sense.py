"""Sense checks of a `done` record, on read: what a table would otherwise print as a result.

A record can parse and have every field its status requires and still be nonsense: an mIoU of
4321, or a hand-written record whose 99.9 no evaluation produced. On read (`store.read_record`)
a done record must hold its confusion matrix, its metrics must lie in their ranges (percentages
in [0, 100]), and the mIoU, the per-class IoU and the pixel accuracy recomputed from the matrix
(as `benchmark.train.evaluate.metrics_from_confusion` does) must agree with the stored values.
A record that fails is reported once and counts as not done: the run is made again and the
record never reaches a table. Pure Python (no torch): `--status` and `--tables-only` use it.
"""

from __future__ import annotations

import math
from typing import Any

from benchmark.records import Metrics

TOLERANCE = 1e-6  # percentage points: the engine's sums run in float64, in another order
VERSION = 1  # bump when the rules change: the summary cache is then rebuilt


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def recompute(confusion: list[list[int]]) -> tuple[float, float, list[float]]:
    """(mIoU, aAcc, per-class IoU) in percent from a confusion matrix (rows: label, columns:
    prediction); a class absent from both has IoU NaN and is left out of the mean."""
    n = len(confusion)
    tp = [confusion[i][i] for i in range(n)]
    rows = [sum(row) for row in confusion]
    cols = [sum(confusion[i][j] for i in range(n)) for j in range(n)]
    ious = [tp[i] / (rows[i] + cols[i] - tp[i]) * 100 if rows[i] + cols[i] - tp[i] > 0
            else math.nan for i in range(n)]
    present = [v for v in ious if not math.isnan(v)]
    total = sum(rows)
    miou = sum(present) / len(present) if present else math.nan
    return miou, sum(tp) / total * 100 if total else math.nan, ious


def _matrix_problem(confusion: Any) -> str | None:
    if not isinstance(confusion, list) or not confusion:
        return "done record lacks confusion (the matrix its metrics are recomputed from)"
    n = len(confusion)
    for row in confusion:
        if not isinstance(row, list) or len(row) != n:
            return f"confusion is not a square matrix ({n} rows)"
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in row):
            return "confusion holds a value that is not a pixel count"
    return None


def _range_problem(metrics: Metrics) -> str | None:
    for key, value in (("miou", metrics.miou), ("aacc", metrics.aacc)):
        if not _number(value) or not 0 <= value <= 100:
            return f"metrics.{key} {value!r} is not a percentage in [0, 100]"
    per_class = metrics.per_class_iou
    if not isinstance(per_class, dict) or not per_class:
        return "done record lacks metrics.per_class_iou"
    for name, value in per_class.items():
        if value is not None and (not _number(value) or not 0 <= value <= 100):
            return f"metrics.per_class_iou.{name} {value!r} is not a percentage in [0, 100]"
    return None


def _agree(stored: float | None, computed: float) -> bool:
    if stored is None or (isinstance(stored, float) and math.isnan(stored)):
        return math.isnan(computed)
    return not math.isnan(computed) and abs(stored - computed) <= TOLERANCE


def sense_problem(data: dict[str, Any]) -> str | None:
    """What makes a parsed `done` record nonsense, in a few words, or None (also for failed
    records, which carry no result)."""
    if data.get("status") != "done":
        return None
    metrics = Metrics.from_dict(data.get("metrics"))  # a dict: `store._problem` checked it
    problem = _range_problem(metrics) or _matrix_problem(data.get("confusion"))
    if problem:
        return problem
    confusion = data["confusion"]
    per_class = metrics.per_class_iou or {}  # never empty here: _range_problem checked it
    if len(per_class) != len(confusion):
        return (f"metrics.per_class_iou has {len(per_class)} classes, its confusion matrix "
                f"{len(confusion)}")
    miou, aacc, ious = recompute(confusion)
    for key, stored, value in (("miou", metrics.miou, miou), ("aacc", metrics.aacc, aacc)):
        if not _agree(stored, value):
            return (f"metrics.{key} {stored!r} disagrees with its confusion matrix "
                    f"({value:.4f})")
    stored = sorted(per_class.values(), key=lambda v: (v is None, v if v is not None else 0))
    computed = sorted(ious, key=lambda v: (math.isnan(v), 0 if math.isnan(v) else v))
    if not all(_agree(s, c) for s, c in zip(stored, computed)):
        return "metrics.per_class_iou disagrees with its confusion matrix"
    pixels = metrics.pixels
    if pixels is not None and pixels != sum(map(sum, confusion)):
        return f"metrics.pixels {pixels!r} is not the confusion matrix's total"
    return None
