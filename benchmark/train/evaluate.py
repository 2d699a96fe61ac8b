"""Evaluation: one confusion matrix over the whole split, then mIoU, per-class IoU and aAcc.

mIoU is computed from the summed confusion matrix (not a mean of per-image IoUs), as in
mmsegmentation and the paper. Under N processes each rank predicts a disjoint shard (no padded
duplicates) and the integer matrices are summed, so 1 and N processes give identical numbers.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from benchmark.train.data import ignore_stop_signals


# --------------------------------------------------------------------------------------- evaluation


class LabelRangeError(ValueError):
    """A label value that is neither a class id nor the ignore value."""


def confusion_matrix(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """(C, C) int64 counts, rows = true class, columns = predicted class; ignore pixels skipped.

    One pass per step over all pixels, no boolean gathers (each a nonzero + copy, the bulk of
    the time of the obvious `bincount(label[valid] * C + pred[valid])`): every pixel gets its
    cell index `label * C + pred`, ignored pixels the spare bin C*C, and one `bincount` counts
    them all. `pred` must hold class ids (an argmax over C scores).
    """
    c = num_classes
    label = label.reshape(-1).long()
    ignored = label == ignore_index
    index = pred.reshape(-1).long().add(label, alpha=c).masked_fill_(ignored, c * c)
    if index.numel() == 0:
        return torch.zeros(c, c, dtype=torch.int64, device=index.device)
    # A label outside [0, C) lands outside [0, C*C], except label C with prediction 0, which
    # lands on the spare bin: then the spare bin holds more than the ignored pixels.
    low, high = torch.aminmax(index)
    counts = torch.bincount(index, minlength=c * c + 1) if low >= 0 else None
    if counts is None or high > c * c or counts[c * c] != ignored.sum():
        bad = label[~ignored & ((label < 0) | (label >= c))][0].item()
        raise LabelRangeError(
            f"label value {bad} is outside [0, {c}) and is not the ignore value "
            f"{ignore_index}; fix the label maps or data.num_classes / data.ignore_index"
        )
    return counts[: c * c].reshape(c, c)


def metrics_from_confusion(cm: Tensor, class_names: list[str] | None = None) -> dict[str, Any]:
    """mIoU and aAcc in percent; a class absent from both labels and predictions has IoU NaN and
    is left out of the mean (mmsegmentation's convention)."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))
    present = ~torch.isnan(iou)
    miou = iou[present].mean().item() * 100 if present.any() else math.nan
    total = cm.sum().item()
    aacc = tp.sum().item() / total * 100 if total else math.nan
    names = class_names or [str(i) for i in range(cm.shape[0])]
    return {
        "miou": miou,
        "aacc": aacc,
        "per_class_iou": {n: v * 100 for n, v in zip(names, iou.tolist())},
        "pixels": int(total),
    }


def shard(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    """Disjoint, padding-free shard of an evaluation split for one process."""
    if world_size == 1:
        return dataset
    return Subset(dataset, list(range(rank, len(dataset), world_size)))


@torch.no_grad()
def predict_confusion(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    ignore_index: int,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    num_workers: int = 0,
    window: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    between_batches: Callable[[], None] | None = None,
    logit_resize: str = "direct",
) -> Tensor:
    """Inference over this process's shard; returns its (C, C) confusion matrix.

    Whole images at once, or with `window` and `stride` overlapping windows (`slide_logits`).
    Logits are upsampled bilinearly to the label size before the argmax. `between_batches()`
    runs before every batch, as often on every process (so it may be a collective); the engine
    acts on signals there, raising to stop a long evaluation (docs/design.md).
    """
    model.eval()
    part = shard(dataset, rank, world_size)
    loader = DataLoader(part, batch_size=batch_size, num_workers=num_workers,
                        pin_memory=torch.device(device).type == "cuda",
                        worker_init_fn=ignore_stop_signals if num_workers > 0 else None)
    # rank 0 holds the largest shard: every process calls between_batches() that many times
    rounds = math.ceil(math.ceil(len(dataset) / world_size) / batch_size)
    batches = iter(tqdm(loader, desc="eval", disable=not progress, leave=False))
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    for _ in range(rounds):
        if between_batches is not None:
            between_batches()
        batch = next(batches, None)
        if batch is None:
            continue
        cm += _batch_confusion(model, batch, num_classes, ignore_index, device, window, stride,
                               logit_resize)
    return cm


def _batch_confusion(model: nn.Module, batch: tuple[Tensor, Tensor], num_classes: int,
                     ignore_index: int, device: torch.device | str,
                     window: tuple[int, int] | None, stride: tuple[int, int] | None,
                     logit_resize: str = "direct") -> Tensor:
    """Confusion matrix of one evaluation batch (whole images or sliding windows)."""
    images, labels = batch
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    if window is not None and stride is not None:
        logits = slide_logits(model, images, num_classes, window, stride)
    else:
        logits = model(images).logits
    logits = upsample_logits(logits, images.shape[-2:], labels.shape[-2:], logit_resize)
    return confusion_matrix(predicted_classes(logits), labels, num_classes, ignore_index)


def predicted_classes(logits: Tensor) -> Tensor:
    """Each pixel's class, the argmax over dim 1 of (B, C, H, W) logits. On the CPU taken as
    `max(1).indices`: the same index (the first of tied maxima, a NaN's where there is one) in
    about half the time of `argmax` over the channel dimension (docs/performance.md)."""
    if logits.device.type == "cpu":
        return logits.max(dim=1).indices
    return logits.argmax(dim=1)


def upsample_logits(logits: Tensor, input_size: Any, label_size: Any,
                    logit_resize: str = "direct") -> Tensor:
    """Logits (float32) at the label size, bilinear: `direct` (align_corners=False), or first to
    the network input's size and then to the label's: `via_input` as MMSeg's whole-image
    inference and postprocess do, `openseg` with align_corners=True as the released ProtoSeg
    code's ss_test does (`eval.logit_resize`, docs/fidelity.md)."""
    logits = logits.float()
    if logit_resize in ("via_input", "openseg") and tuple(logits.shape[-2:]) != tuple(input_size):
        logits = F.interpolate(logits, size=tuple(input_size), mode="bilinear",
                               align_corners=logit_resize == "openseg")
    if tuple(logits.shape[-2:]) == tuple(label_size):
        return logits  # a same-size bilinear resize is the identity
    return F.interpolate(logits, size=tuple(label_size), mode="bilinear", align_corners=False)


def slide_logits(model: nn.Module, images: Tensor, num_classes: int, window: tuple[int, int],
                 stride: tuple[int, int]) -> Tensor:
    """MMSeg's slide inference: logits of overlapping `window` crops placed `stride` apart (the
    last row and column flush with the border), each upsampled to its crop and averaged where
    crops overlap; (B, C, H, W) at the input's size. A window larger than the image is clipped.
    """
    b, _, h, w = images.shape
    wh, ww = min(window[0], h), min(window[1], w)
    rows = max(h - wh + stride[0] - 1, 0) // stride[0] + 1
    cols = max(w - ww + stride[1] - 1, 0) // stride[1] + 1
    total = images.new_zeros(b, num_classes, h, w, dtype=torch.float32)
    count = images.new_zeros(1, 1, h, w, dtype=torch.float32)
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride[0] + wh, h), min(c * stride[1] + ww, w)
            y1, x1 = y2 - wh, x2 - ww
            logits = model(images[:, :, y1:y2, x1:x2]).logits
            total[:, :, y1:y2, x1:x2] += F.interpolate(logits.float(), size=(wh, ww),
                                                       mode="bilinear", align_corners=False)
            count[:, :, y1:y2, x1:x2] += 1
    return total / count
