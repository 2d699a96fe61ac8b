"""A cosine classifier head for protoseg-bench, registered as `cosine` (torch-free here).

The entry point `protoseg_bench.heads: cosine = cosine_head:register` calls `register` with the
head registry when a cell first names `cosine`; the head class loads only when a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from methods.heads.options import HeadOptions
from methods.settings import setting


@dataclass(frozen=True)
class CosineOptions(HeadOptions):
    """Options of the cosine head: `--set model.head.scale=...`."""

    HEAD: ClassVar[str] = "cosine"
    DISPLAY: ClassVar[str] = "Cosine"

    scale: float = setting(10.0, above=0.0)  # logits = scale * cos(pixel, class vector)


def register(heads: Any) -> None:
    """Entry point: add the head to protoseg-bench's head registry."""
    heads.register("cosine", "cosine_head.head:CosineHead", display=CosineOptions.DISPLAY,
                   options=CosineOptions)
