"""Segmentor = backbone + decoder + head, and `build_model(spec)` for any combination."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from methods.backbones import build_backbone
from methods.decoders import build_decoder
from methods.heads import HeadOutput, SegHead, build_head


class Segmentor(nn.Module):
    """images (B, 3, H, W) -> HeadOutput with logits at feature resolution."""

    def __init__(self, backbone: nn.Module, decoder: nn.Module, head: SegHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.head = head

    def forward(self, images: Tensor, target: Tensor | None = None) -> HeadOutput:
        return self.head(self.decoder(self.backbone(images)), target)


def build_model(spec: Any, num_classes: int, ignore_index: int = 255) -> Segmentor:
    """Build from a ModelSpec-like object (backbone, decoder, decoder_channels, head)."""
    backbone = build_backbone(spec.backbone)
    decoder = build_decoder(spec.decoder, backbone.out_channels, spec.decoder_channels)
    head = build_head(spec.head, decoder.out_channels, num_classes, ignore_index)
    return Segmentor(backbone, decoder, head)


def count_params(model: nn.Module) -> dict[str, int]:
    """Learnable parameters, and all parameters plus buffers such as prototypes (not BN stats)."""
    learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    prototypes = sum(
        b.numel() for name, b in model.named_buffers() if name.endswith("prototypes")
    )
    return {"learnable": learnable, "total": learnable + frozen + prototypes}
