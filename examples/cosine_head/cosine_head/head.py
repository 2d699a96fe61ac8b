"""The cosine classifier: one learned unit vector per class, logits = scale * cosine."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cosine_head import CosineOptions
from methods.heads.base import HeadOutput, SegHead, l2_normalize


class CosineHead(SegHead):
    """Scores each pixel's unit feature against C unit class vectors (a normalised softmax)."""

    Options = CosineOptions

    def __init__(self, in_channels: int, num_classes: int, ignore_index: int = 255,
                 options: CosineOptions | None = None, **overrides: Any) -> None:
        super().__init__(in_channels, num_classes, ignore_index, options, **overrides)
        self.weight = nn.Parameter(torch.randn(num_classes, in_channels) * 0.01)

    def forward(self, feats: Tensor, target: Tensor | None = None) -> HeadOutput:
        scores = torch.einsum("bdhw,cd->bchw", l2_normalize(feats, dim=1),
                              l2_normalize(self.weight, dim=-1))
        return HeadOutput(logits=self.options.scale * scores)

    def pixel_embeddings(self, feats: Tensor) -> Tensor:
        return l2_normalize(feats, dim=1)

    def class_vectors(self) -> Tensor:
        return l2_normalize(self.weight.detach().float(), dim=-1)[:, None]
