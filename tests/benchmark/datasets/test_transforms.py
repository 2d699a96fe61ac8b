"""Training / evaluation transforms: image and mask stay aligned through rescale, crop and flip;
masks stay integer, are never interpolated, and padding uses the ignore value."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

from benchmark.datasets.transforms import (IMAGENET_MEAN, IMAGENET_STD, RandomCropPad,
                                           eval_transform, rescale_size, train_transform)

MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None]
STD = torch.tensor(IMAGENET_STD)[:, None, None]


def blocks(h: int, w: int, block: int, classes: int = 8, seed: int = 0) -> torch.Tensor:
    """int64 (h, w) map of block x block squares of random classes."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, classes, (h // block + 1, w // block + 1), generator=g)
    return small.repeat_interleave(block, 0).repeat_interleave(block, 1)[:h, :w].contiguous()


def encode(label: torch.Tensor) -> torch.Tensor:
    """uint8 image whose every channel is 20 * class: the image carries the label."""
    return (label * 20).to(torch.uint8)[None].repeat(3, 1, 1)


def decode(image: torch.Tensor) -> torch.Tensor:
    """Class per pixel read back from a normalised `encode` image (float, not rounded)."""
    return ((image * STD + MEAN) * 255 / 20).mean(0)


def interior(label: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Pixels whose (2r+1)^2 neighbourhood holds one class (away from block edges)."""
    f = label[None, None].float()
    hi = F.max_pool2d(f, 2 * radius + 1, 1, radius)
    lo = -F.max_pool2d(-f, 2 * radius + 1, 1, radius)
    out = (hi == lo)[0, 0]
    out[:radius], out[-radius:], out[:, :radius], out[:, -radius:] = False, False, False, False
    return out  # the crop's own border is left out: its neighbours outside are unknown


@pytest.mark.parametrize("seed", range(6))
def test_image_and_mask_stay_aligned_through_rescale_crop_flip(seed) -> None:
    label = blocks(60, 80, 16, seed=seed)
    label[:3] = 255  # an ignore band along the top edge
    t = train_transform(scale=(80, 60), ratio_range=(0.5, 2.0), crop=(48, 64), ignore_index=255,
                        cat_max_ratio=0.75, flip_prob=0.5)
    torch.manual_seed(seed)
    image, mask = t(encode(label.clamp(max=7)), label)
    assert image.shape == (3, 48, 64) and image.dtype == torch.float32
    assert mask.shape == (48, 64) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= set(range(8)) | {255}  # no interpolated values
    inside = interior(mask) & (mask != 255)
    assert inside.sum() > 100
    err = (decode(image) - mask.float())[inside].abs().max().item()
    assert err < 0.3, f"image and mask misaligned (max class error {err:.2f})"


def test_the_alignment_check_detects_a_misalignment() -> None:
    label = blocks(48, 64, 12, seed=1)
    image = encode(label).float() / 255
    image = ((image - MEAN) / STD).flip(-1)  # flip the image only
    inside = interior(label)
    assert (decode(image) - label.float())[inside].abs().max() > 0.5


def test_flip_mirrors_image_and_mask_together() -> None:
    label = torch.arange(6).repeat(4, 1)  # columns 0..5
    t = train_transform(flip_prob=1.0)
    image, mask = t(encode(label), label)
    assert torch.equal(mask, label.flip(-1))
    assert torch.allclose(decode(image), mask.float(), atol=0.05)


def test_crop_larger_than_the_image_pads_with_ignore_and_zero() -> None:
    label = torch.full((10, 12), 3)
    t = train_transform(crop=(16, 20), ignore_index=255, flip_prob=0.0)
    torch.manual_seed(0)
    image, mask = t(encode(label), label)
    assert mask.shape == (16, 20)
    assert torch.equal(mask[:10, :12], label)  # the image sits at the top left
    assert (mask[10:] == 255).all() and (mask[:, 12:] == 255).all()
    black = ((0 - MEAN) / STD).expand(3, 16, 20)
    assert torch.allclose(image[:, 10:], black[:, 10:]) and torch.allclose(image[:, :, 12:],
                                                                         black[:, :, 12:])


def test_masks_are_resized_by_nearest_neighbour_only() -> None:
    label = torch.tensor([[0, 9], [9, 0]]).repeat_interleave(5, 0).repeat_interleave(5, 1)
    for ratio in (0.3, 0.77, 1.9):
        t = train_transform(ratio_range=(ratio, ratio), flip_prob=0.0)
        _, mask = t(encode(label), label)
        assert set(mask.unique().tolist()) == {0, 9}, ratio


def test_cat_max_ratio_prefers_crops_without_a_dominant_class() -> None:
    label = torch.zeros(64, 64, dtype=torch.int64)
    label[40:, 40:] = 1  # class 1 only in the bottom-right corner
    inputs = [tv_tensors.Image(encode(label)), tv_tensors.Mask(label)]

    def balanced_share(ratio: float) -> float:
        crop, hits = RandomCropPad((24, 24), 255, cat_max_ratio=ratio), 0
        for s in range(60):
            torch.manual_seed(s)
            p = crop.make_params(inputs)
            window = label[p["top"]:p["top"] + 24, p["left"]:p["left"] + 24]
            counts = torch.bincount(window.flatten(), minlength=2)
            hits += int(counts.min() > 0 and counts.max() / counts.sum() < 0.75)
        return hits / 60

    assert balanced_share(0.75) > balanced_share(1.0) + 0.3


def test_photometric_distortion_leaves_the_mask_alone() -> None:
    label = blocks(32, 32, 8, seed=3)
    for mode in ("mmseg", "brightness"):
        t = train_transform(flip_prob=0.0, photometric=mode)
        changed = False
        for s in range(5):
            torch.manual_seed(s)
            image, mask = t(encode(label.clamp(max=7)), label)
            assert torch.equal(mask, label)
            changed |= not torch.allclose(decode(image), label.float().clamp(max=7), atol=0.05)
        assert changed, mode


def test_eval_transform_resizes_the_image_only() -> None:
    label = blocks(30, 40, 10, seed=4)
    image, mask = eval_transform(scale=(20, 15))(encode(label), label)
    assert image.shape == (3, 15, 20)
    assert torch.equal(mask, label)  # original size for the metric
    image2, _ = eval_transform(scale=(20, 15))(encode(label), label)
    assert torch.equal(image, image2)


def test_rescale_size_follows_the_keep_ratio_rule() -> None:
    assert rescale_size(1024, 2048, (2048, 512)) == [512, 1024]  # short side limits
    assert rescale_size(300, 2000, (2048, 512)) == [307, 2048]  # long side limits
    assert rescale_size(2000, 300, (2048, 512)) == [2048, 307]  # orientation-free
    assert rescale_size(360, 480, (480, 360), ratio=0.5) == [180, 240]
    assert rescale_size(10, 20, None, ratio=1.5) == [15, 30]
