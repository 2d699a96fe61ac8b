"""Parametric softmax head: a 1x1 convolution, the classifier of FCN/HRNet/SegFormer baselines."""

from __future__ import annotations

from torch import Tensor, nn

from methods.heads.base import HeadOutput, SegHead, l2_normalize
from methods.heads.options import HeadOptions, SoftmaxOptions


class SoftmaxHead(SegHead):
    """logits = W f + b with W of shape (C, D): one learned vector per class."""

    Options = SoftmaxOptions

    def __init__(self, in_channels: int, num_classes: int, ignore_index: int = 255,
                 options: HeadOptions | None = None, **overrides: object) -> None:
        super().__init__(in_channels, num_classes, ignore_index, options, **overrides)
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, feats: Tensor, target: Tensor | None = None) -> HeadOutput:
        return HeadOutput(logits=self.classifier(feats))

    def pixel_embeddings(self, feats: Tensor) -> Tensor:
        """The classifier's input features, unit length per pixel."""
        return l2_normalize(feats, dim=1)

    def class_vectors(self) -> Tensor:
        """The classifier's weight rows, unit length: (C, 1, D), one vector per class."""
        weights = self.classifier.weight.detach().float()[:, :, 0, 0]
        return l2_normalize(weights, dim=-1)[:, None]
