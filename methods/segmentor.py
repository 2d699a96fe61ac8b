"""Segmentor = backbone + decoder + head (+ an optional auxiliary FCN head); `build_model`."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from methods.backbones import build_backbone
from methods.decoders import (build_decoder, conv_bn_relu, init_classifier_like_mmseg,
                              init_like_mmseg)
from methods.heads import HeadOutput, SegHead, build_head

AUX_CHANNELS = 256  # MMSeg's auxiliary FCNHead width (FCN-R101-D8, UperNet-Swin)


class AuxFCNHead(nn.Module):
    """MMSeg's auxiliary FCNHead: one 3x3 conv + BN + ReLU, dropout, 1x1 classifier.

    Trained only (weight 0.4 in MMSeg), absent from the evaluation forward; its parameters are
    part of the published counts (e.g. FCN-R101-D8: 2.4M of 68.6M).
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = AUX_CHANNELS,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.conv(x)))


class Segmentor(nn.Module):
    """images (B, 3, H, W) -> HeadOutput with logits at feature resolution.

    With an auxiliary head, a training forward with a target adds its weighted cross-entropy
    (on the second-to-last backbone level, e.g. ResNet layer3) as `losses["aux"]`.
    """

    def __init__(self, backbone: nn.Module, decoder: nn.Module, head: SegHead,
                 aux: nn.Module | None = None, aux_weight: float = 0.0,
                 ignore_index: int = 255) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.head = head
        self.aux = aux
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index

    def features(self, images: Tensor) -> Tensor:
        """The decoder's feature map (B, D, h, w), the head's input (analysis figures)."""
        return self.decoder(self.backbone(images))

    def forward(self, images: Tensor, target: Tensor | None = None) -> HeadOutput:
        feats = self.backbone(images)
        out = self.head(self.decoder(feats), target)
        if self.aux is not None and self.training and target is not None:
            # float32 first: under bf16 autocast upsampling would round its output to bf16
            logits = F.interpolate(self.aux(feats[-2]).float(), size=target.shape[-2:],
                                   mode="bilinear", align_corners=False)
            if (target != self.ignore_index).any():
                ce = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index)
            else:  # nothing labelled: a zero that keeps the aux head in the graph (DDP)
                ce = logits.float().sum() * 0.0
            out.losses["aux"] = self.aux_weight * ce
        return out


def build_model(spec: Any, num_classes: int, ignore_index: int = 255) -> Segmentor:
    """Build from a ModelSpec-like object (backbone, decoder, decoder_channels, head, aux_weight,
    init).

    `aux_weight > 0` adds the auxiliary FCN head on the second-to-last backbone level.
    `init="mmseg"` initialises the heads as MMSeg does and gives MiT MMSeg's LayerNorm eps
    (docs/fidelity.md); `library` (default) keeps torch's / transformers' defaults.
    """
    backbone = build_backbone(spec.backbone)
    decoder = build_decoder(spec.decoder, backbone.out_channels, spec.decoder_channels)
    head = build_head(spec.head, decoder.out_channels, num_classes, ignore_index)
    aux_weight = float(getattr(spec, "aux_weight", 0.0))
    aux = None
    if aux_weight > 0:
        if len(backbone.out_channels) < 2:
            raise ValueError(f"aux_weight > 0 needs a backbone with >= 2 levels; "
                             f"{spec.backbone} has {len(backbone.out_channels)}")
        aux = AuxFCNHead(backbone.out_channels[-2], num_classes)
    if getattr(spec, "init", "library") == "mmseg":
        init_heads_like_mmseg(decoder, head, aux)
        if hasattr(backbone, "use_mmseg_eps"):
            backbone.use_mmseg_eps()
    return Segmentor(backbone, decoder, head, aux, aux_weight, ignore_index)


def init_heads_like_mmseg(decoder: nn.Module, head: nn.Module, aux: nn.Module | None) -> None:
    """MMSeg's head initialisation (docs/fidelity.md): conv + BN blocks Kaiming (fan_out), the
    softmax classifiers (`conv_seg`) normal std 0.01, bias 0. Other heads keep their own."""
    for part in (decoder, aux):
        if part is not None:
            init_like_mmseg(part)
    for classifier in (getattr(head, "classifier", None), getattr(aux, "classifier", None)):
        if isinstance(classifier, nn.Conv2d):
            init_classifier_like_mmseg(classifier)


def count_params(model: nn.Module) -> dict[str, int]:
    """Learnable parameters, and all parameters plus the head's prototypes (not BN stats)."""
    learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    head = getattr(model, "head", None)
    vectors = head.prototype_vectors() if head is not None else None
    prototypes = vectors.numel() if vectors is not None else 0
    return {"learnable": learnable, "total": learnable + frozen + prototypes}
