"""MMSegmentation 1.x's own data pipeline (`data.pipeline=mmseg`, docs/fidelity.md).

`MMSegPipeline`: MMSeg 1.x's own operations, equal to its train pipeline + SegDataPreProcessor
on the same draws (tests/fidelity/test_pipeline.py): size from the truncated
`int(scale * ratio)`, cv2 bilinear images (no antialiasing), cv2 nearest (floor) labels,
unpadded crop, PhotoMetricDistortion on uint8 (truncation after each op; OpenCV HSV: S scaled,
H + an integer in [-18, 17] mod 180), 0-255 mean/std, then padding to the crop with 0 (the mean
colour) and the ignore label. OpenCV does the resizes, flips and HSV: mmcv's very functions, so
they agree bit for bit, which a torch copy of cv2's fixed-point rounding would not (after HSV one
grey level in can become several), and it is fast on uint8; the pointwise photometric ops run as
256-entry tables of MMSeg's own float32 arithmetic. The worker keeps uint8 (H, W, 3) from the
decoder to the padded sample; normalisation and the padding's 0 run on the device
(benchmark/datasets/staging.py), as MMSeg's data preprocessor does. opencv-python (pinned), not
-headless: the fidelity extra's mmcv-lite and mmengine require it, and two OpenCV packages must
not share one environment's `cv2`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from benchmark.datasets.staging import DeviceNormalise

PHOTOMETRIC = ("none", "mmseg", "brightness")  # data.photometric, both pipelines

MMSEG_MEAN, MMSEG_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)  # RGB, 0-255


def _cv2() -> Any:
    """OpenCV, imported on first use (only data.pipeline=mmseg needs it), on one thread like
    torch in a DataLoader worker (mmengine turns OpenCV's threads off for the same reason)."""
    try:
        import cv2
    except ImportError as err:  # e.g. no libGL: opencv-python-headless of the same version
        raise ImportError(f"data.pipeline=mmseg needs OpenCV ({err}); `pip install -e .`") from None
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
    return cv2


def mmseg_rescale_size(h: int, w: int, scale: tuple[int, int] | None,
                       ratio: float = 1.0) -> list[int]:
    """mmcv's RandomResize + imrescale: the scale is truncated, `int(s * ratio)`, before the
    keep-ratio factor; each side is then `int(side * factor + 0.5)`. (h, w) out."""
    if scale and scale[0] > 0 and scale[1] > 0:
        s0, s1 = int(scale[0] * ratio), int(scale[1] * ratio)
        factor = min(max(s0, s1) / max(h, w), min(s0, s1) / min(h, w))
    else:
        factor = ratio
    return [max(1, int(h * float(factor) + 0.5)), max(1, int(w * float(factor) + 0.5))]


def resize_pair(img: np.ndarray, label: np.ndarray | None,
                size: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """HWC uint8 image by cv2 bilinear (no antialiasing), label by cv2 nearest, as mmcv does."""
    if img.shape[:2] != tuple(size):
        cv2 = _cv2()
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        if label is not None:
            label = cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return img, label


def compact_label(label: np.ndarray) -> np.ndarray:
    """A label map OpenCV can resize: uint8 as MMSeg keeps it where the values fit, else int32."""
    if label.dtype in (np.uint8, np.int32):
        return label
    fits = label.size == 0 or (int(label.min()) >= 0 and int(label.max()) <= 255)
    return label.astype(np.uint8 if fits else np.int32)


def class_counts(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts) of a label crop, as np.unique(return_counts=True) gives them; a 256-bin
    OpenCV histogram on uint8 (one pass, no sort)."""
    if label.dtype != np.uint8:
        return np.unique(label, return_counts=True)
    hist = _cv2().calcHist([label], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    values = np.flatnonzero(hist)
    return values, hist[values]


class TorchDraws:
    """MMSeg's numpy draws, from the torch RNG (`SegmentationDataset` seeds it per item)."""

    def random(self) -> float:  # np.random.random_sample
        return float(torch.rand((), dtype=torch.float64))

    def randint(self, low: int, high: int) -> int:  # np.random.randint: [low, high)
        return int(torch.randint(low, high, ()))

    def uniform(self, low: float, high: float) -> float:  # np.random.uniform
        return low + (high - low) * self.random()

    def flip(self, prob: float) -> bool:  # RandomFlip: np.random.choice([dir, None], p)
        return self.random() < prob


LEVELS = np.arange(256, dtype=np.uint8)  # every uint8 value: a pointwise op's look-up table


def _convert(img: np.ndarray, alpha: float = 1, beta: float = 0) -> np.ndarray:
    """MMSeg PhotoMetricDistortion.convert: float32 * alpha + beta, clip, truncate to uint8."""
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def _apply(img: np.ndarray, table: np.ndarray | None) -> np.ndarray:
    """`table[img]` (cv2.LUT, one pass); None = identity."""
    return img if table is None else _cv2().LUT(img, table)


def _then(first: np.ndarray | None, second: np.ndarray) -> np.ndarray:
    """The table of `first` then `second` (both pointwise: composing them is exact)."""
    return second if first is None else second[first]


def _on_hsv(img: np.ndarray, channel: int, table: np.ndarray) -> np.ndarray:
    """`table` on one channel of OpenCV's uint8 HSV (H in [0, 180)) of an RGB image."""
    cv2 = _cv2()
    tables = np.repeat(LEVELS[:, None], 3, 1)
    tables[:, channel] = table
    hsv = cv2.LUT(cv2.cvtColor(img, cv2.COLOR_RGB2HSV), tables.reshape(256, 1, 3))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def photometric_uint8(img: np.ndarray, mode: str, draws: Any) -> np.ndarray:
    """MMSeg's PhotoMetricDistortion (mode "mmseg"; same draws in the same order) or the released
    ProtoSeg code's RandomBrightness (openseg: an integer shift in [-10, 10]) on HWC uint8 RGB.

    Each op maps a pixel value to a value, so it runs as a 256-entry table computed by MMSeg's
    own arithmetic (float32 `convert`, `(h + delta) % 180`) and applied in one pass: equal to
    MMSeg's arrays bit for bit; brightness and contrast next to each other make one table."""
    if mode == "brightness":
        shift = draws.randint(-10, 11)
        return _apply(img, np.clip(LEVELS.astype(np.int16) + shift, 0, 255).astype(np.uint8))

    def contrast() -> np.ndarray | None:
        return _convert(LEVELS, alpha=draws.uniform(0.5, 1.5)) if draws.randint(0, 2) else None

    table = _convert(LEVELS, beta=draws.uniform(-32, 32)) if draws.randint(0, 2) else None
    contrast_first = draws.randint(0, 2) == 1
    if contrast_first:
        late = contrast()
        table = table if late is None else _then(table, late)
    if draws.randint(0, 2):
        alpha = draws.uniform(0.5, 1.5)
        img = _on_hsv(_apply(img, table), 1, _convert(LEVELS, alpha=alpha))
        table = None
    if draws.randint(0, 2):
        delta = draws.randint(-18, 18)
        hue = ((LEVELS.astype(int) + delta) % 180).astype(np.uint8)
        img = _on_hsv(_apply(img, table), 0, hue)
        table = None
    if not contrast_first:
        late = contrast()
        table = table if late is None else _then(table, late)
    return _apply(img, table)


class MMSegPipeline:
    """MMSeg 1.x's train pipeline + SegDataPreProcessor on (uint8 RGB (3, H, W), label):
    RandomResize, RandomCrop, RandomFlip, photometric distortion, normalisation, padding to the
    crop; `train=False`: its test pipeline (Resize, normalisation). `draws` None: torch RNG.

    Staged (benchmark/datasets/staging.py): `host` is the worker's part, uint8 HWC from the
    decoded array to the padded sample as MMSeg's transforms keep it; `finish` is the data
    preprocessor's part (normalisation, the padding's 0) on the batch, on the device."""

    def __init__(self, scale: tuple[int, int] | None = None,
                 ratio_range: tuple[float, float] = (1.0, 1.0),
                 crop: tuple[int, int] | None = None, ignore_index: int = 255,
                 cat_max_ratio: float = 1.0, flip_prob: float = 0.5, photometric: str = "none",
                 train: bool = True, draws: Any = None) -> None:
        if photometric not in PHOTOMETRIC:
            raise ValueError(f"photometric mode must be one of {PHOTOMETRIC}, got {photometric!r}")
        self.scale, self.ratio_range, self.crop, self.train = scale, ratio_range, crop, train
        self.ignore_index, self.cat_max_ratio = ignore_index, cat_max_ratio
        self.flip_prob, self.photometric, self.draws = flip_prob, photometric, draws
        self.finish = DeviceNormalise(MMSEG_MEAN, MMSEG_STD, "mmseg")

    @property
    def staged(self) -> bool:
        """Training splits into `host` + `finish`; evaluation items stay whole (float)."""
        return self.train

    def _crop_box(self, label: np.ndarray, draws: Any) -> tuple[int, int]:
        """RandomCrop.crop_bbox: redrawn up to 10 times while one class dominates."""
        (ch, cw), (h, w) = self.crop, label.shape

        def draw() -> tuple[int, int]:
            return draws.randint(0, max(h - ch, 0) + 1), draws.randint(0, max(w - cw, 0) + 1)

        top, left = draw()
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                values, counts = class_counts(label[top:top + ch, left:left + cw])
                counts = counts[values != self.ignore_index]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                top, left = draw()
        return top, left

    def __call__(self, image: torch.Tensor,
                 label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.train:  # test pipeline: Resize to the scale; the label keeps its size
            img = _hwc(image)
            if self.scale and self.scale[0] > 0 and self.scale[1] > 0:
                img, _ = resize_pair(img, None, mmseg_rescale_size(*img.shape[:2], self.scale))
            x = torch.from_numpy(img).permute(2, 0, 1).float()
            mean, std = (torch.tensor(v).view(-1, 1, 1) for v in (MMSEG_MEAN, MMSEG_STD))
            return ((x - mean) / std).contiguous(), label
        images, labels = self.finish([t[None] for t in self.host(image, label)])
        return images[0], labels[0]

    def host(self, image: torch.Tensor,
             label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The worker's part of a training sample: uint8 (H, W, 3) image and label padded to the
        crop (0 and the ignore label), and the unpadded (h, w) that `finish` zeroes beyond."""
        draws = self.draws or TorchDraws()
        img, lab = _hwc(image), compact_label(label.numpy())
        if self.scale or self.ratio_range != (1.0, 1.0):
            lo, hi = self.ratio_range
            ratio = draws.random() * (hi - lo) + lo
            img, lab = resize_pair(img, lab, mmseg_rescale_size(*img.shape[:2], self.scale, ratio))
        if self.crop:
            top, left = self._crop_box(lab, draws)
            img = img[top:top + self.crop[0], left:left + self.crop[1]]
            lab = lab[top:top + self.crop[0], left:left + self.crop[1]]
        cv2 = _cv2()
        if self.flip_prob > 0 and draws.flip(self.flip_prob):
            img, lab = cv2.flip(img, 1), cv2.flip(lab, 1)
        if self.photometric != "none":
            img = photometric_uint8(np.ascontiguousarray(img), self.photometric, draws)
        size = torch.tensor(img.shape[:2], dtype=torch.int64)
        h, w = self.crop or img.shape[:2]
        if img.shape[:2] != (h, w):  # stack_batch's padding, bottom/right
            img = _pad_to(img, h, w, 0)
            lab = _pad_to(lab, h, w, self.ignore_index)
        return (torch.from_numpy(np.ascontiguousarray(img)),
                torch.from_numpy(np.ascontiguousarray(lab)), size)


def _hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A C-contiguous (H, W, 3) uint8 array of a (3, H, W) tensor: no copy for the decoder's
    channels-first view of its (H, W, 3) array (benchmark/datasets/base.py: decode_rgb)."""
    arr = image.permute(1, 2, 0).numpy() if isinstance(image, torch.Tensor) else image
    return np.ascontiguousarray(arr)


def _pad_to(arr: np.ndarray, h: int, w: int, value: int) -> np.ndarray:
    """`arr` padded at the bottom and right to at least (h, w) with `value`."""
    out = np.full((max(h, arr.shape[0]), max(w, arr.shape[1]), *arr.shape[2:]), value,
                  dtype=arr.dtype)
    out[:arr.shape[0], :arr.shape[1]] = arr
    return out
