"""The head registry: name -> head class, each naming its options class; `build_head`."""

from __future__ import annotations

from typing import Any

from methods.heads.base import SegHead
from methods.heads.pixel_contrast import PixelContrastHead
from methods.heads.pixel_query import PixelQueryHead
from methods.heads.prototype import PrototypeHead
from methods.heads.softmax import SoftmaxHead

# in the order of HEAD_OPTIONS (methods/heads/options.py); tests/methods/test_heads.py checks
HEADS: dict[str, type[SegHead]] = {
    cls.Options.HEAD: cls for cls in (SoftmaxHead, PixelQueryHead, PrototypeHead,
                                      PixelContrastHead)
}


def build_head(spec: Any, in_channels: int, num_classes: int, ignore_index: int = 255) -> SegHead:
    """Build the head named `spec.name` (a HeadSpec-like object) with its options object."""
    if spec.name not in HEADS:
        raise ValueError(f"unknown head {spec.name!r}; choose one of {', '.join(HEADS)}")
    head = HEADS[spec.name]
    return head(in_channels, num_classes, ignore_index, options=head.Options.from_spec(spec))


__all__ = ["HEADS", "build_head"]
