"""The one interface every pixel classifier implements (docs/design.md#the-head-interface)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from torch import Tensor, nn

from methods.heads.options import HeadOptions


@dataclass
class HeadOutput:
    """What a head returns.

    logits: class scores (B, C, h, w) at feature resolution; the engine upsamples them and
        applies the shared cross-entropy.
    losses: head-specific terms, already weighted (e.g. PPC, PPD); empty at evaluation.
    state: tensors for analysis and plots (embeddings, prototype assignments).
    """

    logits: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    state: dict[str, Tensor] = field(default_factory=dict)


class SegHead(nn.Module):
    """Base class: `forward(feats, target=None) -> HeadOutput`.

    `feats` is the decoder's feature map (B, D, h, w); `target` is the label map (B, H, W) at
    image resolution with `ignore_index` for unlabelled pixels, given only during training.
    A head's options are one frozen `Options` object (methods/heads/options.py), given whole
    (`options=`, as `build_head` does) or as keyword overrides of the defaults (tests, perf).
    """

    Options: ClassVar[type[HeadOptions]] = HeadOptions
    num_classes: int
    ignore_index: int

    def __init__(self, in_channels: int, num_classes: int, ignore_index: int = 255,
                 options: HeadOptions | None = None, **overrides: Any) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        options = options if options is not None else self.Options()
        if not isinstance(options, self.Options):
            raise TypeError(f"{type(self).__name__} takes {self.Options.__name__}, "
                            f"got {type(options).__name__}")
        self.options = replace(options, **overrides).check()

    def forward(self, feats: Tensor, target: Tensor | None = None) -> HeadOutput:  # noqa: D102
        raise NotImplementedError

    # What the analysis figures need (benchmark/report/plots.py), behind the head's own math.

    def pixel_embeddings(self, feats: Tensor) -> Tensor:
        """Unit pixel vectors (B, D, h, w) that `class_vectors` score, from decoder features."""
        raise ValueError(f"{type(self).__name__} has no fixed class vectors; embedding figures "
                         f"need the prototype or the softmax head")

    def class_vectors(self) -> Tensor:
        """Unit class vectors (C, K, D): K per class, in the space of `pixel_embeddings`."""
        raise ValueError(f"{type(self).__name__} has no fixed class vectors; embedding figures "
                         f"need the prototype or the softmax head")

    def prototype_vectors(self) -> Tensor | None:
        """Unit prototypes (C, K, D) of a nonparametric head; None for the other heads."""
        return None


def downsample_labels(target: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a label map (B, H, W) to feature size (labels never blend)."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    resized = nn.functional.interpolate(target[:, None].float(), size=size, mode="nearest")
    return resized[:, 0].long()


def flatten_pixels(x: Tensor) -> Tensor:
    """(B, D, h, w) -> (B*h*w, D), pixel order b, y, x."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def unflatten_pixels(x: Tensor, b: int, h: int, w: int) -> Tensor:
    """(B*h*w, C) -> (B, C, h, w)."""
    return x.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()


def l2_normalize(x: Tensor, dim: int = -1) -> Tensor:
    return nn.functional.normalize(x, p=2, dim=dim)


__all__ = ["HeadOutput", "SegHead", "downsample_labels", "flatten_pixels", "unflatten_pixels",
           "l2_normalize"]
