"""`build_head`: the head registered under a HeadSpec's name, built with its options object."""

from __future__ import annotations

from typing import Any

from methods.catalog import HEADS
from methods.heads.base import SegHead


def build_head(spec: Any, in_channels: int, num_classes: int, ignore_index: int = 255) -> SegHead:
    """Build the head named `spec.name` (a HeadSpec: name + that head's options object)."""
    head = HEADS.get(spec.name).load()
    options = spec.options
    if not isinstance(options, head.Options):
        raise TypeError(f"head {spec.name!r} takes {head.Options.__name__}, got "
                        f"{type(options).__name__}")
    return head(in_channels, num_classes, ignore_index, options=options)


__all__ = ["build_head"]
