"""The one interface every pixel classifier implements (DESIGN.md: "the heart of the suite")."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn


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
    """

    num_classes: int
    ignore_index: int

    def __init__(self, in_channels: int, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def forward(self, feats: Tensor, target: Tensor | None = None) -> HeadOutput:  # noqa: D102
        raise NotImplementedError


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
