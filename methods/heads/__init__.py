"""Pixel classifiers behind one interface: `forward(feats, target=None) -> HeadOutput`."""

from __future__ import annotations

from typing import Any

from methods.heads.base import HeadOutput, SegHead
from methods.heads.pixel_contrast import PixelContrastHead
from methods.heads.pixel_query import PixelQueryHead
from methods.heads.prototype import PrototypeHead
from methods.heads.softmax import SoftmaxHead

HEADS: dict[str, type[SegHead]] = {
    "softmax": SoftmaxHead,
    "pixel_query": PixelQueryHead,
    "prototype": PrototypeHead,
    "pixel_contrast": PixelContrastHead,
}


def build_head(spec: Any, in_channels: int, num_classes: int, ignore_index: int = 255) -> SegHead:
    """Build the head named `spec.name` with the options of `spec` that it understands."""
    name = spec.name
    if name == "softmax":
        return SoftmaxHead(in_channels, num_classes, ignore_index)
    if name == "pixel_query":
        return PixelQueryHead(
            in_channels, num_classes, ignore_index,
            dim=spec.query_dim, num_layers=spec.query_layers, num_heads=spec.query_heads,
        )
    if name == "prototype":
        return PrototypeHead(
            in_channels, num_classes, ignore_index,
            num_prototypes=spec.num_prototypes, embed_dim=spec.embed_dim,
            projection=spec.projection, proj_norm_axis=spec.proj_norm_axis,
            score_norm=spec.score_norm, update_assign=spec.update_assign, gamma=spec.gamma,
            sinkhorn_eps=spec.sinkhorn_eps, sinkhorn_iters=spec.sinkhorn_iters,
            ppc_weight=spec.ppc_weight, ppd_weight=spec.ppd_weight, ppc_tau=spec.ppc_tau,
        )
    if name == "pixel_contrast":
        return PixelContrastHead(
            in_channels, num_classes, ignore_index,
            variant=spec.contrast_variant, weight=spec.contrast_weight, tau=spec.contrast_tau,
            base_tau=spec.contrast_base_tau, warmup_iters=spec.contrast_warmup_iters,
            max_anchors=spec.contrast_max_anchors, max_views=spec.contrast_max_views,
            min_class_pixels=spec.contrast_min_class_pixels, queue_size=spec.contrast_queue_size,
            queue_pixels=spec.contrast_queue_pixels, proj_dim=spec.contrast_proj_dim,
        )
    raise ValueError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}")


__all__ = ["HEADS", "HeadOutput", "SegHead", "SoftmaxHead", "PixelQueryHead", "PrototypeHead",
           "PixelContrastHead", "build_head"]
