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


def seg_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int,
                      average: str = "labelled") -> Tensor:
    """Cross-entropy of (B, C, H, W) `logits` against (B, H, W) `labels`, averaged per `average`."""
    if average == "labelled":
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)
    if average != "all_pixels":
        raise ValueError(f"unknown train.ce_average {average!r}; use labelled or all_pixels")
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
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
