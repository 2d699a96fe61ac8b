"""Backbones by name, built from the field's libraries (timm, transformers); no weights loaded.

Every backbone returns a list of feature maps (B, C_i, H/s_i, W/s_i) and exposes
`out_channels` and `strides` so any decoder can sit on top. Weights from local files are loaded
by the benchmark side (I/O does not belong in methods/).
"""

from __future__ import annotations

from typing import Callable

import timm
from torch import Tensor, nn


class Backbone(nn.Module):
    """A feature extractor with known output channels and strides."""

    out_channels: list[int]
    strides: list[int]


class TimmFeatures(Backbone):
    """A timm model in `features_only` mode (ResNet with dilation, HRNet, ...)."""

    def __init__(self, name: str, **kwargs) -> None:
        super().__init__()
        self.body = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        self.out_channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction())

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.body(x))


class MixTransformer(Backbone):
    """SegFormer's MiT encoder (transformers `SegformerModel` built from a config, no download)."""

    def __init__(self, hidden_sizes: list[int], depths: list[int], num_heads: list[int]) -> None:
        super().__init__()
        from transformers import SegformerConfig, SegformerModel

        config = SegformerConfig(
            hidden_sizes=hidden_sizes, depths=depths, num_attention_heads=num_heads,
            drop_path_rate=0.1,
        )
        self.body = SegformerModel(config)
        self.out_channels = list(hidden_sizes)
        self.strides = [4, 8, 16, 32]

    def forward(self, x: Tensor) -> list[Tensor]:
        out = self.body(pixel_values=x, output_hidden_states=True)
        return list(out.hidden_states)


def resnet18_d8() -> Backbone:
    """Small CPU backbone: ResNet-18 dilated to output stride 8 (layer3 and layer4 outputs)."""
    return TimmFeatures("resnet18", output_stride=8, out_indices=(3, 4))


def mit_b0() -> Backbone:
    """Small CPU backbone: MiT-B0 (3.3M params), four stages at strides 4-32."""
    return MixTransformer([32, 64, 160, 256], [2, 2, 2, 2], [1, 2, 5, 8])


BACKBONES: dict[str, Callable[[], Backbone]] = {
    "resnet18_d8": resnet18_d8,
    "mit_b0": mit_b0,
}


def build_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]()
