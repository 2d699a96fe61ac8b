"""Decoders: multi-level backbone features -> one feature map (B, channels, h, w).

None of them holds the final classifier: that is the head's job, so every head fits every decoder.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class FCNDecoder(nn.Module):
    """MMSeg FCNHead without `conv_seg`: num_convs 3x3 convs on the last level, concat input."""

    def __init__(
        self, in_channels: list[int], channels: int, num_convs: int = 2,
        concat_input: bool = True, dropout: float = 0.1,
    ) -> None:
        super().__init__()
        cin = in_channels[-1]
        self.convs = nn.Sequential(
            *[conv_bn_relu(cin if i == 0 else channels, channels) for i in range(num_convs)]
        )
        self.conv_cat = conv_bn_relu(cin + channels, channels) if concat_input else None
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = channels

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = feats[-1]
        out = self.convs(x)
        if self.conv_cat is not None:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return self.dropout(out)


class AllMLPDecoder(nn.Module):
    """SegFormer decoder without the classifier: per-level linear, upsample to 1/4, fuse."""

    def __init__(self, in_channels: list[int], channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = conv_bn_relu(channels * len(in_channels), channels, kernel=1)
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = channels

    def forward(self, feats: list[Tensor]) -> Tensor:
        size = feats[0].shape[-2:]
        ups = [
            F.interpolate(lin(f), size=size, mode="bilinear", align_corners=False)
            for lin, f in zip(self.linears, feats)
        ]
        return self.dropout(self.fuse(torch.cat(ups, dim=1)))


DECODERS: dict[str, Callable[..., nn.Module]] = {
    "fcn": FCNDecoder,
    "mlp": AllMLPDecoder,
}


def build_decoder(name: str, in_channels: list[int], channels: int) -> nn.Module:
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}")
    return DECODERS[name](in_channels, channels)
