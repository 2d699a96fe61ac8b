"""Staged pipelines (benchmark/datasets/staging.py): uint8 samples from the workers and the
device's normalisation make exactly what the whole transform makes, item by item and batched;
the uint8 label path and the table-driven photometric ops equal their reference arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms import v2

from benchmark.datasets.ade20k import ADE20K
from benchmark.datasets.base import (DataError, NativeSource, Pair, SegmentationDataset,
                                     decode_label, decode_rgb, make_lut)
from benchmark.datasets.mmseg_pipeline import LEVELS, MMSegPipeline, _convert, photometric_uint8
from benchmark.datasets.staging import HostItems, _channel_stats, move, staged
from benchmark.datasets.transforms import (IMAGENET_MEAN, IMAGENET_STD, BGRInput, RandomCropPad,
                                           RandomRescale, train_transform)


def _pairs(tmp_path, sizes=((97, 131), (60, 45), (130, 90))) -> list[Pair]:
    """JPEG images and 151-value PNG labels of `sizes` (some smaller than a 64 crop)."""
    rng = np.random.default_rng(0)
    pairs = []
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        label = rng.integers(0, 151, (h // 8 + 1, w // 8 + 1)).repeat(8, 0).repeat(8, 1)[:h, :w]
        Image.fromarray(img).save(tmp_path / f"{i}.jpg", quality=90)
        Image.fromarray(label.astype(np.uint8)).save(tmp_path / f"{i}.png")
        pairs.append(Pair(tmp_path / f"{i}.jpg", tmp_path / f"{i}.png"))
    return pairs


def _dataset(tmp_path, transform) -> SegmentationDataset:
    return SegmentationDataset(ADE20K, NativeSource(ADE20K, _pairs(tmp_path)), "train", transform)


TRANSFORMS = {
    "mmseg": lambda: MMSegPipeline((160, 48), (0.5, 2.0), (64, 64), 255, 0.75, 0.5, "mmseg"),
    "mmseg_no_crop_ratio": lambda: MMSegPipeline((160, 48), (0.25, 0.6), (64, 64)),
    "torchvision": lambda: train_transform((160, 48), (0.5, 2.0), (64, 64), 255, 0.75, 0.5),
    "mmseg_bgr": lambda: BGRInput(MMSegPipeline((160, 48), (0.5, 2.0), (64, 64),
                                                photometric="brightness")),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_a_staged_batch_equals_the_whole_transforms_items(tmp_path, name) -> None:
    ds = _dataset(tmp_path, TRANSFORMS[name]())
    host_set, finish = staged(ds)
    assert isinstance(host_set, HostItems) and finish is ds.transform.finish
    keys = [(i, 100 + i) for i in range(len(ds))]
    host = [host_set[k] for k in keys]
    assert host[0][0].dtype == torch.uint8 and host[0][1].dtype == torch.uint8
    loader = DataLoader(HostItems(ds), batch_size=len(keys), sampler=keys)
    images, labels = finish(next(iter(loader)), "cpu")
    whole = [ds[k] for k in keys]
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert images.is_contiguous()
    assert torch.equal(images, torch.stack([w[0] for w in whole]))
    assert torch.equal(labels, torch.stack([w[1] for w in whole]))
    last, _ = finish(next(iter(loader)), "cpu", channels_last=True)
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(last, images)


def test_the_mmseg_padding_is_the_normalised_zero_and_the_ignore_label(tmp_path) -> None:
    ds = _dataset(tmp_path, TRANSFORMS["mmseg_no_crop_ratio"]())
    image, label, size = ds.host_item((1, 3))  # 60x45 at ratio <= 0.6: smaller than the crop
    h, w = size.tolist()
    assert image.shape == (64, 64, 3) and (h < 64 or w < 64)
    assert (label[h:] == 255).all() and (label[:, w:] == 255).all()
    x, _ = ds.transform.finish([image[None], label[None], size[None]])
    assert (x[0, :, h:] == 0).all() and (x[0, :, :, w:] == 0).all()
    assert not (x[0, :, :h, :w] == 0).all()


def test_the_device_part_reads_nothing_back_from_the_device(tmp_path) -> None:
    """On a meta device (no values: reading one back raises, as waiting for a GPU would cost),
    the mmseg device part runs, padded batch included; its mean and std are made once."""
    ds = _dataset(tmp_path, TRANSFORMS["mmseg_no_crop_ratio"]())
    items = [ds.host_item((k, 3)) for k in (0, 1)]
    batch = [torch.stack([item[i] for item in items]) for i in range(3)]
    assert (batch[2] < 64).any()  # a sample smaller than the crop: the padding is zeroed
    x, labels = ds.transform.finish(batch, "meta")
    assert x.device.type == "meta" and x.shape == (2, 3, 64, 64) and labels.dtype == torch.int64
    norm = ds.transform.finish
    meta = torch.device("meta")
    assert _channel_stats(norm.mean, norm.std, meta) is _channel_stats(norm.mean, norm.std, meta)


def test_the_staged_torchvision_pipeline_equals_the_unstaged_one(tmp_path) -> None:
    """The same v2 steps with ToDtype + Normalize in the worker (every run before staging)."""
    ds = _dataset(tmp_path, TRANSFORMS["torchvision"]())
    reference = v2.Compose([RandomRescale((160, 48), (0.5, 2.0)),
                            RandomCropPad((64, 64), 255, 0.75), v2.RandomHorizontalFlip(0.5),
                            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None},
                                       scale=True),
                            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    for i in range(len(ds)):
        image, label = ds.load(i)
        torch.manual_seed(i)
        ref_img, ref_mask = reference(tv_tensors.Image(image.contiguous()), tv_tensors.Mask(label))
        torch.manual_seed(i)
        ours, mask = ds.transform(image, label)
        assert torch.equal(ours, ref_img.as_subclass(torch.Tensor))
        assert torch.equal(mask, ref_mask.as_subclass(torch.Tensor))


def test_unstaged_items_are_moved_as_they_are(tmp_path) -> None:
    ds = _dataset(tmp_path, train_transform((160, 48), (0.5, 2.0), (64, 64),
                                            photometric="mmseg"))  # float photometric ops
    host_set, finish = staged(ds)
    assert host_set is ds and finish is move
    image, label = ds[(0, 1)]
    images, labels = finish([image[None], label[None]], "cpu")
    assert torch.equal(images[0], image) and labels.dtype == torch.int64


def test_decoded_images_are_a_view_of_the_decoders_array(tmp_path) -> None:
    pair = _pairs(tmp_path)[0]
    image = decode_rgb(pair.image)
    assert image.shape == (3, 97, 131) and image.permute(1, 2, 0).is_contiguous()
    with Image.open(pair.image) as im:
        assert np.array_equal(image.permute(1, 2, 0).numpy(), np.array(im.convert("RGB")))


@pytest.mark.parametrize("compact", [False, True])
def test_uint8_label_maps_decode_as_the_int64_path_does(compact) -> None:
    raw = np.random.default_rng(1).integers(0, 151, (37, 53)).astype(np.uint8)
    lut = ADE20K.luts["raw"]
    ours = decode_label(raw, lut, 255, "x", ADE20K, compact=compact)
    reference = decode_label(raw.astype(np.int32), lut, 255, "x", ADE20K)  # the int64 path
    assert ours.dtype == (torch.uint8 if compact else torch.int64)
    assert torch.equal(ours.long(), reference)
    wide = decode_label(raw, lut, 300, "x", ADE20K, compact=True)  # 300 does not fit uint8
    assert wide.dtype == torch.int64 and int(wide.max()) == 300
    bad = raw.copy()
    bad[3, 4] = 200
    with pytest.raises(DataError, match="label value 200"):
        decode_label(bad, lut, 255, "x", ADE20K, compact=compact)
    only_ignore = make_lut({}, ignore=(0,))
    assert decode_label(np.zeros((2, 2), np.uint8), only_ignore, 255, "x", ADE20K,
                        compact=compact).eq(255).all()


class Coins:
    """photometric_uint8's draws: coins and values from a list, in order."""

    def __init__(self, *values) -> None:
        self.values = list(values)

    def randint(self, low, high):
        return self.values.pop(0)

    uniform = randint


def _reference_photometric(img: np.ndarray, values: list) -> np.ndarray:
    """MMSeg's PhotoMetricDistortion written out on the whole image (float32 per op)."""
    import cv2

    v = list(values)

    def contrast(x):
        return _convert(x, alpha=v.pop(0)) if v.pop(0) else x

    if v.pop(0):
        img = _convert(img, beta=v.pop(0))
    first = v.pop(0) == 1
    if first:
        img = contrast(img)
    if v.pop(0):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = _convert(hsv[..., 1], alpha=v.pop(0))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if v.pop(0):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(int) + v.pop(0)) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return img if first else contrast(img)


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("coins", [(1, 1, 1, 1), (1, 0, 0, 1), (0, 1, 1, 0), (1, 1, 0, 0)])
def test_table_driven_photometric_ops_equal_the_float_arithmetic(mode, coins) -> None:
    img = np.random.default_rng(sum(coins) + mode).integers(0, 256, (19, 23, 3), dtype=np.uint8)
    brightness, saturation, hue, contrast = coins
    draws = [brightness] + ([-23.7] if brightness else []) + [mode]
    late = [contrast] + ([1.37] if contrast else [])
    draws += (late if mode else []) + [saturation] + ([0.61] if saturation else [])
    draws += [hue] + ([-11] if hue else []) + ([] if mode else late)
    ours = photometric_uint8(img, "mmseg", Coins(*draws))
    assert np.array_equal(ours, _reference_photometric(img, draws))
    assert np.array_equal(LEVELS, np.arange(256))
