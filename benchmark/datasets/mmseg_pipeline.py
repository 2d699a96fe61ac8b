"""MMSegmentation 1.x's own data pipeline (`data.pipeline=mmseg`, docs/fidelity.md).

`MMSegPipeline`: MMSeg 1.x's own operations, equal to its train pipeline + SegDataPreProcessor
on the same draws (tests/fidelity/test_pipeline.py): size from the truncated
`int(scale * ratio)`, cv2 bilinear images (no antialiasing), cv2 nearest (floor) labels,
unpadded crop, PhotoMetricDistortion on uint8 (truncation after each op; OpenCV HSV: S scaled,
H + an integer in [-18, 17] mod 180), 0-255 mean/std, then padding to the crop with 0 (the mean
colour) and the ignore label. OpenCV does the resize and HSV: mmcv's very functions, so they
agree bit for bit, which a torch copy of cv2's fixed-point rounding would not (after HSV one
grey level in can become several), and it is fast on uint8. opencv-python (pinned), not
-headless: the fidelity extra's mmcv-lite and mmengine require it, and two OpenCV packages must
not share one environment's `cv2`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

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


def nearest_index(src: int, dst: int) -> np.ndarray:
    """cv2.INTER_NEAREST's source index of each output pixel: floor(x * src / dst) in double."""
    return np.minimum(np.floor(np.arange(dst) * (1.0 / (dst / src))).astype(np.int64), src - 1)


def resize_pair(img: np.ndarray, label: np.ndarray | None,
                size: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """HWC uint8 image by cv2 bilinear (no antialiasing), label by cv2's nearest rule."""
    if img.shape[:2] != tuple(size):
        img = _cv2().resize(img, (size[1], size[0]), interpolation=_cv2().INTER_LINEAR)
        if label is not None:
            ys, xs = nearest_index(label.shape[0], size[0]), nearest_index(label.shape[1], size[1])
            label = label[ys[:, None], xs[None, :]]
    return img, label


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


def _convert(img: np.ndarray, alpha: float = 1, beta: float = 0) -> np.ndarray:
    """MMSeg PhotoMetricDistortion.convert: float32 * alpha + beta, clip, truncate to uint8."""
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def _on_hsv(img: np.ndarray, channel: int, fn: Any) -> np.ndarray:
    """Apply `fn` to one channel of OpenCV's uint8 HSV (H in [0, 180)) of an RGB image."""
    hsv = _cv2().cvtColor(img, _cv2().COLOR_RGB2HSV)
    hsv[:, :, channel] = fn(hsv[:, :, channel])
    return _cv2().cvtColor(hsv, _cv2().COLOR_HSV2RGB)


def photometric_uint8(img: np.ndarray, mode: str, draws: Any) -> np.ndarray:
    """MMSeg's PhotoMetricDistortion (mode "mmseg"; same draws in the same order) or the released
    ProtoSeg code's RandomBrightness (openseg: an integer shift in [-10, 10]) on HWC uint8 RGB."""
    if mode == "brightness":
        return np.clip(img.astype(np.int16) + draws.randint(-10, 11), 0, 255).astype(np.uint8)

    def contrast(x: np.ndarray) -> np.ndarray:
        return _convert(x, alpha=draws.uniform(0.5, 1.5)) if draws.randint(0, 2) else x

    if draws.randint(0, 2):
        img = _convert(img, beta=draws.uniform(-32, 32))
    contrast_first = draws.randint(0, 2) == 1
    if contrast_first:
        img = contrast(img)
    if draws.randint(0, 2):
        alpha = draws.uniform(0.5, 1.5)
        img = _on_hsv(img, 1, lambda s: _convert(s, alpha=alpha))
    if draws.randint(0, 2):
        delta = draws.randint(-18, 18)
        img = _on_hsv(img, 0, lambda h: (h.astype(int) + delta) % 180)
    return img if contrast_first else contrast(img)


class MMSegPipeline:
    """MMSeg 1.x's train pipeline + SegDataPreProcessor on (uint8 RGB (3, H, W), int64 label):
    RandomResize, RandomCrop, RandomFlip, photometric distortion, normalisation, padding to the
    crop; `train=False`: its test pipeline (Resize, normalisation). `draws` None: torch RNG."""

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
        self.mean = torch.tensor(MMSEG_MEAN).view(-1, 1, 1)
        self.std = torch.tensor(MMSEG_STD).view(-1, 1, 1)

    def _crop_box(self, label: np.ndarray, draws: Any) -> tuple[int, int]:
        """RandomCrop.crop_bbox: redrawn up to 10 times while one class dominates."""
        (ch, cw), (h, w) = self.crop, label.shape

        def draw() -> tuple[int, int]:
            return draws.randint(0, max(h - ch, 0) + 1), draws.randint(0, max(w - cw, 0) + 1)

        top, left = draw()
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                values, counts = np.unique(label[top:top + ch, left:left + cw], return_counts=True)
                counts = counts[values != self.ignore_index]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                top, left = draw()
        return top, left

    def __call__(self, image: torch.Tensor,
                 label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        draws = self.draws or TorchDraws()
        img = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        if not self.train:  # test pipeline: Resize to the scale; the label keeps its size
            if self.scale and self.scale[0] > 0 and self.scale[1] > 0:
                img, _ = resize_pair(img, None, mmseg_rescale_size(*img.shape[:2], self.scale))
            return self._normalise(img), label
        lab = label.numpy()
        if self.scale or self.ratio_range != (1.0, 1.0):
            lo, hi = self.ratio_range
            ratio = draws.random() * (hi - lo) + lo
            img, lab = resize_pair(img, lab, mmseg_rescale_size(*img.shape[:2], self.scale, ratio))
        if self.crop:
            top, left = self._crop_box(lab, draws)
            img = img[top:top + self.crop[0], left:left + self.crop[1]]
            lab = lab[top:top + self.crop[0], left:left + self.crop[1]]
        if self.flip_prob > 0 and draws.flip(self.flip_prob):
            img, lab = img[:, ::-1], lab[:, ::-1]
        img = np.ascontiguousarray(img)
        if self.photometric != "none":
            img = photometric_uint8(img, self.photometric, draws)
        return self._pad(self._normalise(img), torch.from_numpy(np.ascontiguousarray(lab)))

    def _normalise(self, img: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(img).permute(2, 0, 1).float()
        return ((x - self.mean) / self.std).contiguous()

    def _pad(self, img: torch.Tensor, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """stack_batch: pad bottom/right to the crop size, image 0 (normalised), label ignore."""
        h, w = self.crop or img.shape[-2:]
        pad = [0, max(w - img.shape[-1], 0), 0, max(h - img.shape[-2], 0)]
        return (torch.nn.functional.pad(img, pad, value=0.0),
                torch.nn.functional.pad(lab, pad, value=self.ignore_index))
