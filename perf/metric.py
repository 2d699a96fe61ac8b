"""Figure 4: confusion-matrix accumulation for ADE20K-sized outputs vs torchmetrics.

One call accumulates the confusion matrix of several batches of predictions and labels (150
classes, 8 images of 512x512 per batch, about 5% of the pixels unlabelled) with the suite's
`benchmark.train.evaluate.confusion_matrix`, or with torchmetrics' `MulticlassJaccardIndex`
(`update` per batch), once with its input validation (the default) and once without. The
suite's matrix must equal torchmetrics' bit for bit and the per-class IoU must agree; target:
the suite at least as fast as torchmetrics (speed ratio >= 1.0), against both settings.
torchmetrics is a benchmark-only dependency (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import math

import torch

from perf.common import (
    Report,
    Table,
    alternate,
    blocky_labels,
    paired_ratio,
    standalone,
    verdict,
)

IGNORE = 255
TARGET = 1.0


def make_batches(num_classes: int, batches: int, batch: int, size: int, device: torch.device,
                 seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(prediction, label) pairs: segment-like labels, predictions right on ~60% of pixels."""
    out = []
    for i in range(batches):
        label = blocky_labels(batch, size, size, num_classes, IGNORE, device, seed=seed + i)
        gen = torch.Generator().manual_seed(1000 + seed + i)
        noise = torch.randint(0, num_classes, label.shape, generator=gen).to(device)
        wrong = (torch.rand(label.shape, generator=gen) < 0.4).to(device)
        pred = torch.where(wrong | (label == IGNORE), noise, label)
        out.append((pred, label))
    return out


def suite_accumulate(batches, num_classes: int) -> torch.Tensor:
    from benchmark.train.evaluate import confusion_matrix

    device = batches[0][0].device
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    for pred, label in batches:
        cm += confusion_matrix(pred, label, num_classes, IGNORE)
    return cm


def torchmetrics_metric(num_classes: int, device: torch.device, validate: bool):
    from torchmetrics.classification import MulticlassJaccardIndex

    return MulticlassJaccardIndex(num_classes=num_classes, ignore_index=IGNORE, average=None,
                                  validate_args=validate).to(device)


def torchmetrics_accumulate(metric, batches) -> None:
    metric.reset()
    for pred, label in batches:
        metric.update(pred, label)


def check_identical(batches, num_classes: int, device: torch.device) -> tuple[bool, float]:
    """The suite's matrix equals torchmetrics' exactly; returns (equal, max |IoU difference|
    in percentage points over the classes present)."""
    from benchmark.train.evaluate import metrics_from_confusion

    cm = suite_accumulate(batches, num_classes)
    metric = torchmetrics_metric(num_classes, device, validate=True)
    torchmetrics_accumulate(metric, batches)
    equal = torch.equal(metric.confmat.to(cm.dtype), cm)
    ours = metrics_from_confusion(cm.cpu())["per_class_iou"]
    theirs = (metric.compute().double().cpu() * 100).tolist()
    diffs = [abs(v - t) for v, t in zip(ours.values(), theirs) if not math.isnan(v)]
    return equal, max(diffs) if diffs else 0.0


def run(quick: bool = False, device: torch.device | None = None) -> Report:
    """Metric: confusion matrix accumulation vs torchmetrics MulticlassJaccardIndex."""
    device = device or torch.device("cpu")
    try:
        import torchmetrics
    except ImportError:
        return Report("metric", "4. Metric: confusion matrix vs torchmetrics", [], [
            "skipped: torchmetrics is not installed (`pip install -e '.[bench]'`)"])
    classes = 150
    n_batches, batch, size = (2, 2, 128) if quick else (4, 8, 512)
    repeats = 3 if quick else 9
    batches = make_batches(classes, n_batches, batch, size, device)
    equal, max_diff = check_identical(batches, classes, device)
    if not equal or max_diff > 1e-4:
        raise AssertionError(f"confusion matrices differ from torchmetrics (equal={equal}, "
                             f"max IoU difference {max_diff:.2e} points)")
    tm_checked = torchmetrics_metric(classes, device, validate=True)
    tm_fast = torchmetrics_metric(classes, device, validate=False)
    fns = {"suite": lambda: suite_accumulate(batches, classes),
           "tm_checked": lambda: torchmetrics_accumulate(tm_checked, batches),
           "tm_fast": lambda: torchmetrics_accumulate(tm_fast, batches)}
    t = alternate(fns, repeats=repeats, warmup=1, device=device)
    pixels = n_batches * batch * size * size
    rows = []
    for name, label in (("tm_checked", "MulticlassJaccardIndex (validate_args=True, default)"),
                        ("tm_fast", "MulticlassJaccardIndex (validate_args=False)")):
        speed = paired_ratio(t[name], t["suite"])  # their time / ours = our speed-up
        rows.append([label, t[name].ms(), t["suite"].ms(), f"{speed:.2f}x", f">= {TARGET:.1f}x",
                     "yes", verdict(speed, TARGET, better="higher")])
    headers = ["Against", "torchmetrics (ms)", "Suite (ms)", "Suite speed", "Target",
               "Identical", "Verdict"]
    notes = [f"{classes} classes, {n_batches} batches x {batch} images x {size}x{size} "
             f"({pixels / 1e6:.1f} M pixels) per call, {device}; median of {repeats} alternated "
             f"rounds; speed = torchmetrics time / suite time (median over rounds)",
             f"identical: confusion matrices equal bit for bit; per-class IoU within "
             f"{max_diff:.1e} percentage points (torchmetrics computes in float32)",
             f"torchmetrics {torchmetrics.__version__}; the suite's validation (labels outside "
             f"[0, C) are an error) is always on"]
    return Report("metric", "4. Metric: confusion matrix vs torchmetrics",
                  [Table(headers, rows)], notes)


if __name__ == "__main__":
    raise SystemExit(standalone("metric", run))
