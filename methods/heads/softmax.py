"""Parametric softmax head: a 1x1 convolution, the classifier of FCN/HRNet/SegFormer baselines."""

from __future__ import annotations

from torch import Tensor, nn

from methods.heads.base import HeadOutput, SegHead


class SoftmaxHead(SegHead):
    """logits = W f + b with W of shape (C, D): one learned vector per class."""

    def __init__(self, in_channels: int, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__(in_channels, num_classes, ignore_index)
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, feats: Tensor, target: Tensor | None = None) -> HeadOutput:
        return HeadOutput(logits=self.classifier(feats))
