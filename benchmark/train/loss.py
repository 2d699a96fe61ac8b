"""The segmentation cross-entropy's normalisation (`train.ce_average`, docs/fidelity.md).

- `labelled`: the mean over labelled pixels (torch's `ignore_index` mean; the released ProtoSeg
  code's `nn.CrossEntropyLoss`). The suite's behaviour before the recipes named their sources.
- `all_pixels`: the sum over labelled pixels divided by all pixels, ignored ones included
  (MMSegmentation's `CrossEntropyLoss` with its default `avg_non_ignore=False`), for the main
  and the auxiliary loss alike: 1 / (labelled share) times smaller than `labelled`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

AUX_LOSS = "aux"  # the auxiliary head's term in HeadOutput.losses (methods/segmentor.py)
# `train.ce_weights`: per-class weights of the cross-entropy. protoseg_cityscapes: the released
# ProtoSeg Cityscapes configs' `ce_weight` (configs/cityscapes/H_48_D_4_proto.json), train ids.
CLASS_WEIGHTS: dict[str, tuple[float, ...] | None] = {
    "none": None,
    "protoseg_cityscapes": (0.8373, 0.9180, 0.8660, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489,
                            0.8786, 1.0023, 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955,
                            1.0865, 1.1529, 1.0507),
}


def seg_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int,
                      average: str = "labelled", class_weights: str = "none") -> Tensor:
    """Cross-entropy of (B, C, H, W) `logits` against (B, H, W) `labels`, averaged per `average`.

    With `class_weights`, `labelled` is torch's weighted mean (sum of w_y * loss / sum of w_y,
    the released code's `nn.CrossEntropyLoss(weight)`), `all_pixels` the weighted sum / pixels."""
    values = CLASS_WEIGHTS[class_weights]
    weight = None if values is None else logits.new_tensor(values)
    if weight is not None and weight.numel() != logits.shape[1]:
        raise ValueError(f"train.ce_weights={class_weights} has {weight.numel()} classes, the "
                         f"model {logits.shape[1]}; use it only with its data set")
    if average == "labelled":
        return F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index)
    if average != "all_pixels":
        raise ValueError(f"unknown train.ce_average {average!r}; use labelled or all_pixels")
    total = F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index,
                            reduction="sum")
    return total / labels.numel()


def labelled_share(labels: Tensor, ignore_index: int) -> Tensor:
    """Share of pixels whose label is not `ignore_index` (0-dim float tensor)."""
    return (labels != ignore_index).float().mean()


def rescale_aux_loss(losses: dict[str, Tensor], labels: Tensor, ignore_index: int,
                     average: str = "labelled") -> None:
    """Bring the auxiliary loss (a labelled-pixel mean at label resolution, methods/segmentor.py)
    to `average` in place: `all_pixels` multiplies it by the labelled share of `labels`."""
    if average == "all_pixels" and AUX_LOSS in losses:
        losses[AUX_LOSS] = losses[AUX_LOSS] * labelled_share(labels, ignore_index)
