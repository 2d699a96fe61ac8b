"""Training / evaluation transforms: image and mask stay aligned through rescale, crop and flip;
masks stay integer, are never interpolated, and padding uses the ignore value. data.pipeline=mmseg:
MMSeg's rescale rule, cv2's resize, uint8 photometric ops, padding after normalisation (its
equality with MMSegmentation itself: tests/fidelity/test_pipeline.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

from benchmark.config import Cell, ConfigError, DataSpec
from benchmark.overrides import apply_overrides
from benchmark.datasets.mmseg_pipeline import (MMSEG_MEAN, MMSEG_STD, MMSegPipeline,
                                               mmseg_rescale_size, photometric_uint8,
                                               resize_pair)
from benchmark.datasets.transforms import (IMAGENET_MEAN, IMAGENET_STD, BGRInput, PairTransform,
                                           RandomCropPad, eval_transform, rescale_size,
                                           train_transform, transforms_from_spec)

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


@pytest.mark.parametrize("pipeline", ["torchvision", "mmseg"])
@pytest.mark.parametrize("seed", range(6))
def test_image_and_mask_stay_aligned_through_rescale_crop_flip(seed, pipeline) -> None:
    label = blocks(60, 80, 16, seed=seed)
    label[:3] = 255  # an ignore band along the top edge
    make = train_transform if pipeline == "torchvision" else MMSegPipeline
    t = make(scale=(80, 60), ratio_range=(0.5, 2.0), crop=(48, 64), ignore_index=255,
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


# --------------------------------------------------------------------------- data.pipeline=mmseg


class Fixed:
    """Draws for MMSegPipeline / photometric_uint8 from a list, in order (MMSeg's draw order)."""

    def __init__(self, *values) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)

    randint = uniform = lambda self, low, high: self.values.pop(0)  # noqa: E731
    flip = lambda self, prob: self.values.pop(0)  # noqa: E731


def test_mmseg_rescale_size_truncates_the_scale_first() -> None:
    # int(2048 * 1.3) = 2662, int(512 * 1.3) = 665: factor 665 / 512, not 665.6 / 512
    assert mmseg_rescale_size(512, 683, (2048, 512), 1.3) == [665, 887]
    assert rescale_size(512, 683, (2048, 512), 1.3) == [666, 888]  # the torchvision rule
    assert mmseg_rescale_size(1024, 2048, (2048, 512), 0.55) == [281, 562]
    assert mmseg_rescale_size(1024, 2048, (2048, 512)) == [512, 1024]  # ratio 1: no change
    assert mmseg_rescale_size(10, 20, None, ratio=1.5) == [15, 30]


@pytest.mark.parametrize("src, dst", [(97, 346), (131, 57), (512, 683), (7, 3), (360, 1383)])
def test_labels_resize_by_cv2s_nearest_and_images_by_its_bilinear(src, dst) -> None:
    g = torch.Generator().manual_seed(src)
    label = torch.randint(0, 150, (src, src + 3), generator=g).numpy()
    img = torch.randint(0, 256, (src, src + 3, 3), generator=g, dtype=torch.uint8).numpy()
    ours, ours_label = resize_pair(img, label, [dst, dst + 5])
    assert np.array_equal(ours_label, cv2.resize(label.astype(np.uint8), (dst + 5, dst),
                                                 interpolation=cv2.INTER_NEAREST))
    assert np.array_equal(ours, cv2.resize(img, (dst + 5, dst), interpolation=cv2.INTER_LINEAR))
    _, upsampled = resize_pair(img[:1, :4], np.arange(4, dtype=np.uint8)[None], [1, 8])
    assert upsampled.tolist() == [[0, 0, 1, 1, 2, 2, 3, 3]]  # floor, not centres


def test_mmseg_resize_does_not_antialias() -> None:
    stripes = np.zeros((8, 60, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes: averaged away by antialiasing, not by cv2 bilinear
    small, _ = resize_pair(stripes, None, [8, 20])  # samples pixels 1, 4, 7, ...: 0, 255, 0, ...
    assert small.min() == 0 and small.max() == 255
    old = train_transform(ratio_range=(1 / 3, 1 / 3), flip_prob=0.0)
    image, _ = old(torch.from_numpy(stripes).permute(2, 0, 1), torch.zeros(8, 60, dtype=torch.long))
    assert (image * STD + MEAN).mul(255).std() < 20  # antialiased: near uniform grey


def test_photometric_ops_truncate_to_uint8_after_each_op() -> None:
    img = np.array([[[101, 50, 200]]], np.uint8)
    # brightness +10.7 (coin, value), mode 1 (contrast first), contrast x1.5, no saturation/hue
    out = photometric_uint8(img, "mmseg", Fixed(1, 10.7, 1, 1, 1.5, 0, 0))
    assert out.tolist() == [[[166, 90, 255]]]  # 111.7 -> 111 -> 166.5 -> 166 (rounding: 168)
    # mode 0: saturation, hue, then contrast last
    out = photometric_uint8(img, "mmseg", Fixed(0, 0, 0, 0, 1, 0.5))
    assert out.tolist() == [[[50, 25, 100]]]
    assert photometric_uint8(img, "brightness", Fixed(-4)).tolist() == [[[97, 46, 196]]]
    assert photometric_uint8(img, "brightness", Fixed(60)).tolist() == [[[161, 110, 255]]]


def test_saturation_and_hue_work_in_opencvs_uint8_hsv() -> None:
    img = np.array([[[200, 100, 50], [90, 90, 90]]], np.uint8)  # orange, grey
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    # saturation x0.5 only (coin 0 brightness, mode 0, saturation coin + value, hue 0, contrast 0)
    out = photometric_uint8(img, "mmseg", Fixed(0, 0, 1, 0.5, 0, 0))
    expected = hsv.copy()
    expected[..., 1] = (hsv[..., 1].astype(np.float32) * 0.5).astype(np.uint8)
    assert np.array_equal(out, cv2.cvtColor(expected, cv2.COLOR_HSV2RGB))
    assert out[0, 1].tolist() == [90, 90, 90]  # grey has no saturation to scale
    # hue -18 (an integer, modulo OpenCV's 180)
    out = photometric_uint8(img, "mmseg", Fixed(0, 0, 0, 1, -18, 0))
    expected = hsv.copy()
    expected[..., 0] = (hsv[..., 0].astype(int) - 18) % 180
    assert np.array_equal(out, cv2.cvtColor(expected, cv2.COLOR_HSV2RGB))
    assert not np.array_equal(out[0, 0], img[0, 0])


def test_mmseg_pipeline_pads_after_normalisation_and_distortion() -> None:
    label = blocks(20, 30, 5, classes=4, seed=2)
    image = encode(label)
    # no resize (no scale, ratio 1: no draw); crop 32x40 at (0, 0); no flip; brightness +30
    t = MMSegPipeline(crop=(32, 40), ratio_range=(1.0, 1.0), photometric="mmseg",
                      draws=Fixed(0, 0, False, 1, 30.0, 0, 0, 0, 0))
    out, mask = t(image, label)
    assert out.shape == (3, 32, 40) and mask.shape == (32, 40)
    assert torch.equal(mask[:20, :30], label)
    assert (mask[20:] == 255).all() and (mask[:, 30:] == 255).all()
    assert (out[:, 20:] == 0).all() and (out[:, :, 30:] == 0).all()  # the mean colour, undistorted
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (MMSEG_MEAN, MMSEG_STD))
    brightened = ((image.float() + 30).clamp(max=255) - mean) / std
    assert torch.allclose(out[:, :20, :30], brightened, atol=1e-5)


def test_the_spec_picks_the_pipeline_and_mmseg_eval_resizes_only_the_image() -> None:
    spec = DataSpec(name="camvid", scale_long=40, scale_short=30, crop_size=16, min_scale=0.5,
                    max_scale=2.0, photometric="mmseg")
    assert isinstance(transforms_from_spec(spec, "train"), PairTransform)  # the default
    mm = DataSpec(**{**spec.__dict__, "pipeline": "mmseg"})
    train, evaluate = transforms_from_spec(mm, "train"), transforms_from_spec(mm, "val")
    label = blocks(60, 80, 10, seed=5)
    torch.manual_seed(3)
    a = train(encode(label), label)
    torch.manual_seed(3)
    b = train(encode(label), label)
    assert a[0].shape == (3, 16, 16) and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    image, mask = evaluate(encode(label), label)
    assert image.shape == (3, 30, 40) and torch.equal(mask, label)
    expected = cv2.resize(encode(label).permute(1, 2, 0).numpy(), (40, 30),
                          interpolation=cv2.INTER_LINEAR)
    assert torch.allclose(decode(image) * 20, torch.from_numpy(expected).float().mean(-1),
                          atol=1e-3)


def test_data_pipeline_is_a_checked_choice() -> None:
    cell = apply_overrides(Cell("g", "x"), ["data.pipeline=mmseg"])
    assert cell.data.pipeline == "mmseg" and cell.key != Cell("g", "x").key
    with pytest.raises(ConfigError, match="data.pipeline"):
        apply_overrides(Cell("g", "x"), ["data.pipeline=cv2"])


def test_a_paper_recipes_data_set_batches_through_a_dataloader(tmp_path) -> None:
    from fixtures_data import write_ade20k
    from torch.utils.data import DataLoader

    from benchmark.datasets import build_dataset
    from experiments.recipes import recipe_for

    write_ade20k(tmp_path, {"train": 3, "val": 2}, h=40, w=60)
    spec = recipe_for("ade20k", "fcn").data("ade20k")
    assert spec.pipeline == "mmseg"
    spec = DataSpec(**{**spec.__dict__, "root": str(tmp_path / "ADEChallengeData2016"),
                       "scale_long": 120, "scale_short": 30, "crop_size": 48, "crop_width": 48})
    train = build_dataset(spec, "train")
    images, labels = next(iter(DataLoader([train[(i, i)] for i in range(3)], batch_size=3)))
    assert images.shape == (3, 3, 48, 48) and labels.shape == (3, 48, 48)  # padded to the crop
    assert (labels == 255).any() and set(labels.unique().tolist()) <= set(range(150)) | {255}
    image, label = build_dataset(spec, "val")[0]
    assert image.shape[-2:] == (30, 45) and label.shape == (40, 60)


# ----------------------------------------------------------------- channel order (openseg BGR)


def openseg_input(rgb: torch.Tensor) -> torch.Tensor:
    """The released ProtoSeg code's test input, restated from openseg: cv2.imread gives BGR
    (input_mode BGR), ToTensor transposes HWC->CHW as float, Normalize divides by div_value 255
    and subtracts mean[i] / divides by std[i] from channel i by position."""
    bgr_hwc = rgb.permute(1, 2, 0).numpy()[:, :, ::-1]
    x = torch.from_numpy(bgr_hwc.transpose(2, 0, 1).copy()).float() / 255.0
    for channel, m, s in zip(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)):
        channel.sub_(m).div_(s)
    return x


@pytest.mark.parametrize("pipeline", ["torchvision", "mmseg"])
def test_bgr_input_equals_openseg_normalisation(pipeline: str) -> None:
    g = torch.Generator().manual_seed(3)
    rgb = torch.randint(0, 256, (3, 24, 40), dtype=torch.uint8, generator=g)
    label = blocks(24, 40, 4)
    spec = DataSpec(name="cityscapes", pipeline=pipeline, channel_order="bgr")
    transform = transforms_from_spec(spec, "val")
    assert isinstance(transform, BGRInput)
    image, out_label = transform(rgb, label)
    torch.testing.assert_close(image, openseg_input(rgb), atol=1e-5, rtol=0)
    assert torch.equal(out_label, label)
    # the RGB default differs exactly by the channel order of the input
    rgb_image, _ = transforms_from_spec(DataSpec(name="cityscapes", pipeline=pipeline), "val")(
        rgb, label)
    torch.testing.assert_close(rgb_image, transform.pipeline(rgb, label)[0])
    assert not torch.allclose(rgb_image, image)


def test_bgr_training_sees_the_reversed_image() -> None:
    """Training too: the same draws on the reversed image give the BGR cell's sample."""
    rgb = encode(blocks(32, 32, 8))
    rgb[0] = 255 - rgb[0]  # channels now differ, so their order shows
    spec = DataSpec(name="cityscapes", crop_size=16, min_scale=0.5, max_scale=2.0,
                    photometric="brightness", channel_order="bgr")
    torch.manual_seed(5)
    image, label = transforms_from_spec(spec, "train")(rgb, blocks(32, 32, 8))
    torch.manual_seed(5)
    rgb_spec = DataSpec(**{**spec.__dict__, "channel_order": "rgb"})
    expected, expected_label = transforms_from_spec(rgb_spec, "train")(rgb.flip(0),
                                                                      blocks(32, 32, 8))
    torch.testing.assert_close(image, expected)
    assert torch.equal(label, expected_label)


def test_bgr_with_hsv_distortion_is_refused() -> None:
    cell = Cell("g", "x", data=DataSpec(name="camvid", channel_order="bgr", photometric="mmseg"))
    with pytest.raises(ConfigError, match="channel_order=bgr with data.photometric=mmseg"):
        apply_overrides(cell, [])


def test_the_released_recipe_and_only_it_reads_bgr() -> None:
    from experiments import get_grid

    for grid in ("table2", "zoo", "discrepancies", "table1", "table3"):
        for cell in get_grid(grid).cells:
            released = cell.train.recipe == "cityscapes_hrnet_80k" or (
                grid == "zoo" and cell.model.backbone == "hrnetv2_w48_openseg")
            assert (cell.data.channel_order == "bgr") == released, (grid, cell.row)
