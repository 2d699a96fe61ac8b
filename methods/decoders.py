"""Decoders: multi-level backbone features -> one feature map (B, channels, h, w).

FCN (MMSeg FCNHead), HRNetV2 concat head, UperNet and the SegFormer all-MLP decoder; their
sizes reproduce the paper's parameter counts (docs/method.md#backbones-and-parameter-counts).

None of them holds the final classifier: that is the head's job, so every head fits every decoder.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.catalog import DECODERS  # the registry names this module's classes


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def init_like_mmseg(module: nn.Module) -> None:
    """MMSeg's initialisation of its heads' ConvModules (docs/fidelity.md): every conv + BN
    block (`conv_bn_relu` and the like) gets Kaiming-normal weights (fan_out, ReLU) and a zero
    bias, its BN weight 1 and bias 0. Other layers (e.g. the all-MLP decoder's linear layers,
    plain nn.Linear in SegFormer) keep PyTorch's default."""
    for m in module.modules():
        if (isinstance(m, nn.Sequential) and len(m) >= 2 and isinstance(m[0], nn.Conv2d)
                and isinstance(m[1], nn.BatchNorm2d)):
            nn.init.kaiming_normal_(m[0].weight, mode="fan_out", nonlinearity="relu")
            if m[0].bias is not None:
                nn.init.zeros_(m[0].bias)
            nn.init.ones_(m[1].weight)
            nn.init.zeros_(m[1].bias)


def init_classifier_like_mmseg(conv: nn.Conv2d) -> None:
    """MMSeg's `conv_seg` initialisation: normal with std 0.01, bias 0."""
    nn.init.normal_(conv.weight, std=0.01)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


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


def resize_to(x: Tensor, size: torch.Size) -> Tensor:
    """Bilinear resize (align_corners=False) to `size`; a map already that size is returned as
    is (bilinear at scale 1 is an exact copy, so the result is the same without the copy)."""
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class AllMLPDecoder(nn.Module):
    """SegFormer's own decoder without the classifier: per-level linear, upsample to 1/4, fuse.

    At 768 channels it gives the paper's counts for MiT-B4 (64.1M) and Swin-B (90.6M), so the
    grid uses it; MMSeg has no such head (docs/fidelity.md). MMSeg's model-zoo variants are
    `--set model.decoder=mlp_mmseg --set model.decoder_channels=256` (SegFormer) and
    `--set model.decoder=upernet --set model.decoder_channels=512 --set model.aux_weight=0.4`
    (Swin, Table 1's UperNet row), both tested equal to MMSeg (tests/fidelity/test_models.py).
    """

    def __init__(self, in_channels: list[int], channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = conv_bn_relu(channels * len(in_channels), channels, kernel=1)
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = channels

    def forward(self, feats: list[Tensor]) -> Tensor:
        size = feats[0].shape[-2:]
        ups = [resize_to(lin(f), size) for lin, f in zip(self.linears, feats)]
        return self.dropout(self.fuse(torch.cat(ups, dim=1)))


class HRNetV2Decoder(nn.Module):
    """HRNetV2 head without the classifier (MMSeg `fcn_hr48`): every branch upsampled to the
    first one's resolution and concatenated (720 ch for W48), then one 1x1 conv + BN + ReLU.

    No dropout by default: `fcn_hr48` sets `dropout_ratio=-1` (docs/fidelity.md)."""

    def __init__(self, in_channels: list[int], channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fuse = conv_bn_relu(sum(in_channels), channels, kernel=1)
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = channels

    def forward(self, feats: list[Tensor]) -> Tensor:
        size = feats[0].shape[-2:]
        ups = [feats[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]
        ]
        return self.dropout(self.fuse(torch.cat(ups, dim=1)))


class UperNetDecoder(nn.Module):
    """UperNet (MMSeg UPerHead) without the classifier: pyramid pooling on the last level, a
    top-down FPN over all levels, then a 3x3 fusion of the upsampled pyramid."""

    def __init__(
        self, in_channels: list[int], channels: int, pool_scales: tuple[int, ...] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        top = in_channels[-1]
        self.ppm = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), conv_bn_relu(top, channels, kernel=1))
            for s in pool_scales
        )
        self.bottleneck = conv_bn_relu(top + len(pool_scales) * channels, channels)
        self.laterals = nn.ModuleList(conv_bn_relu(c, channels, kernel=1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(conv_bn_relu(channels, channels) for _ in in_channels[:-1])
        self.fpn_bottleneck = conv_bn_relu(len(in_channels) * channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = channels

    def _psp(self, x: Tensor) -> Tensor:
        pooled = [
            F.interpolate(m(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
            for m in self.ppm
        ]
        return self.bottleneck(torch.cat([x] + pooled, dim=1))

    def forward(self, feats: list[Tensor]) -> Tensor:
        lat = [conv(f) for conv, f in zip(self.laterals, feats[:-1])] + [self._psp(feats[-1])]
        for i in range(len(lat) - 1, 0, -1):  # top-down pathway
            lat[i - 1] = lat[i - 1] + F.interpolate(
                lat[i], size=lat[i - 1].shape[-2:], mode="bilinear", align_corners=False
            )
        outs = [conv(x) for conv, x in zip(self.fpn_convs, lat[:-1])] + [lat[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [
            F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]
        ]
        return self.dropout(self.fpn_bottleneck(torch.cat(outs, dim=1)))


class SegformerHeadDecoder(nn.Module):
    """MMSeg 1.x SegformerHead without `conv_seg` (its model-zoo SegFormer checkpoints): per
    level a 1x1 conv + BN + ReLU, resized to the first level, concatenated in level order, then
    a 1x1 conv + BN + ReLU fusion. SegFormer's own head (`mlp`) has a linear layer per level."""

    def __init__(self, in_channels: list[int], channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.convs = nn.ModuleList(conv_bn_relu(c, channels, kernel=1) for c in in_channels)
        self.fusion_conv = conv_bn_relu(channels * len(in_channels), channels, kernel=1)
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = channels

    def forward(self, feats: list[Tensor]) -> Tensor:
        size = feats[0].shape[-2:]
        outs = [resize_to(conv(f), size) for conv, f in zip(self.convs, feats)]
        return self.dropout(self.fusion_conv(torch.cat(outs, dim=1)))


class OpensegHRNetDecoder(nn.Module):
    """The released ProtoSeg HRNet's `cls_head` (openseg `HRNet_W48_Proto`), the classifier
    left to the head: branches upsampled with align_corners=True and concatenated, one 3x3 conv
    (with bias) + BN + ReLU, dropout 0.1 (docs/method.md#paper-vs-released-code)."""

    def __init__(self, in_channels: list[int], channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fuse = nn.Sequential(nn.Conv2d(sum(in_channels), channels, 3, padding=1),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = channels

    def forward(self, feats: list[Tensor]) -> Tensor:
        size = feats[0].shape[-2:]
        ups = [feats[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=True) for f in feats[1:]
        ]
        return self.dropout(self.fuse(torch.cat(ups, dim=1)))


def build_decoder(name: str, in_channels: list[int], channels: int) -> nn.Module:
    """The decoder registered as `name` (methods/catalog.py, or a plugin's)."""
    return DECODERS.build(name, in_channels, channels)
