"""Staged training pipelines: uint8 samples from the DataLoader workers, normalisation and
padding on the training device, as MMSegmentation's SegDataPreProcessor does.

A staged transform has `host(image, label)`, what a worker runs (geometry and photometry on
uint8, the sample padded to the crop, plus its unpadded size where the padding must become the
normalised 0), and `finish(batch, device)`, what the training step runs on the collated batch
(float, normalisation, padding, int64 labels). Its `__call__` is `finish` of a one-item batch
of `host` on the CPU, so a staged sample equals the unstaged one bit for bit, and the fidelity
tests, which call the transform, cover both parts. uint8 crosses the workers' queue: a quarter
of the bytes of float32 samples, and the normalisation runs where the model does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

NORMALISATIONS = ("mmseg", "torchvision")

Finish = Callable[..., tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class DeviceNormalise:
    """The device part of a staged pipeline: a uint8 batch to float32 NCHW and int64 labels.

    `rule` "mmseg": (B, H, W, 3) uint8 -> (x - mean) / std on the 0-255 scale, then 0 outside
    each sample's unpadded (h, w) (stack_batch pads the normalised image with 0);
    "torchvision": (B, 3, H, W) uint8 -> ToDtype(scale=True) then Normalize, torchvision's own
    kernels (the padding was black uint8 before normalisation, as in the unstaged pipeline).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    rule: str = "mmseg"

    def __post_init__(self) -> None:
        if self.rule not in NORMALISATIONS:
            raise ValueError(f"normalisation rule must be one of {NORMALISATIONS}, "
                             f"got {self.rule!r}")

    def __call__(self, batch: Sequence[Tensor], device: torch.device | str = "cpu",
                 channels_last: bool = False) -> tuple[Tensor, Tensor]:
        images = batch[0].to(device, non_blocking=True)
        labels = batch[1].to(device, non_blocking=True).long()
        if self.rule == "mmseg":
            x = images.permute(0, 3, 1, 2).float()
            mean, std = _channel_stats(self.mean, self.std, x.device)
            x = (x - mean) / std
            if len(batch) > 2:
                x = _zero_outside(x, batch[2])
        else:
            from torchvision.transforms.v2 import functional as F

            x = F.normalize(F.to_dtype(images, torch.float32, scale=True),
                            list(self.mean), list(self.std))
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt), labels


@functools.lru_cache(maxsize=16)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...],
                   device: torch.device) -> tuple[Tensor, Tensor]:
    """Mean and std as (C, 1, 1) tensors on `device`, made once: no copy to a GPU each step."""
    return (torch.tensor(mean, device=device).view(-1, 1, 1),
            torch.tensor(std, device=device).view(-1, 1, 1))


def _zero_outside(x: Tensor, sizes: Tensor) -> Tensor:
    """`x` (B, C, H, W) with 0 below row h_b and right of column w_b of each sample b; `sizes`
    (B, 2) as the loader gives them, on the host, so the test below waits for no GPU."""
    h, w = x.shape[-2:]
    if bool((sizes[:, 0] >= h).all() and (sizes[:, 1] >= w).all()):
        return x
    sizes = sizes.to(x.device, non_blocking=True)
    rows = torch.arange(h, device=x.device).view(1, h, 1) < sizes[:, 0].view(-1, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) < sizes[:, 1].view(-1, 1, 1)
    return torch.where((rows & cols).unsqueeze(1), x, torch.zeros((), device=x.device))


def move(batch: Sequence[Tensor], device: torch.device | str = "cpu",
         channels_last: bool = False) -> tuple[Tensor, Tensor]:
    """The device part of an unstaged pipeline: the finished batch to `device`."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    images = batch[0].to(device, non_blocking=True).contiguous(memory_format=fmt)
    return images, batch[1].to(device, non_blocking=True).long()


def is_staged(transform: Any) -> bool:
    """Whether `transform` splits into a worker part and a device part."""
    return bool(getattr(transform, "staged", False))


class HostItems(Dataset):
    """A staged data set's items as the workers make them (`SegmentationDataset.host_item`)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> tuple[Tensor, ...]:
        return self.dataset.host_item(key)


def staged(dataset: Any) -> tuple[Dataset, Finish]:
    """(what the DataLoader loads, what the training step applies to each batch on its device):
    the worker part and `finish` of a staged transform, else the items and `move`."""
    transform = getattr(dataset, "transform", None)
    if hasattr(dataset, "host_item") and is_staged(transform):
        return HostItems(dataset), transform.finish
    return dataset, move
