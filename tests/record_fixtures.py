"""Records that pass the sense checks of benchmark/sense.py: metrics with the confusion matrix
they come from, for tests that write a record with chosen numbers."""

from __future__ import annotations

from benchmark.sense import recompute

SCALE = 10 ** 9  # pixels per error cell: IoUs within 3e-8 points of the targets


def consistent(miou: float, per_class: dict[str, float | None] | None = None) -> dict:
    """`metrics` and `confusion` of a record whose classes have the IoUs `per_class` (default
    two classes at `miou`; None: a class absent from labels and predictions). Each present
    class's errors go to the next present class (a ring), so class i's IoU is
    a_i / (a_i + 2 * SCALE); the stored mIoU is `miou` itself, within the checks' tolerance
    of the matrix's."""
    per_class = per_class or {"a": miou, "b": miou}
    names = list(per_class)
    present = [i for i, n in enumerate(names) if per_class[n] is not None]
    n = len(names)
    confusion = [[0] * n for _ in range(n)]
    for k, i in enumerate(present):
        t = per_class[names[i]]
        confusion[i][i] = round(2 * SCALE * t / (100 - t))
        confusion[i][present[(k + 1) % len(present)]] += SCALE
    _, aacc, _ = recompute(confusion)
    metrics = {"miou": miou, "aacc": aacc, "per_class_iou": dict(per_class),
               "pixels": sum(map(sum, confusion))}
    return {"metrics": metrics, "confusion": confusion}
