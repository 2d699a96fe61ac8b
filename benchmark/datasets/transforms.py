"""Training and evaluation transforms (torchvision.transforms.v2 on tv_tensors.Image + Mask).

Training follows MMSegmentation's pipeline: random rescale around the recipe scale, random
crop (retried while one class dominates, `cat_max_ratio`), horizontal flip, photometric
distortion, normalisation. Evaluation resizes only the image; the label keeps its size for the
metric. Masks are only resized by nearest neighbour (uint8 in a DataLoader worker, int64 out of
a whole transform). All randomness comes from the torch RNG, so seeding it
(`SegmentationDataset`) makes a sample reproducible. Training pipelines without float
photometric ops are staged (benchmark/datasets/staging.py): normalised on the device.

`data.pipeline` (docs/fidelity.md) picks the implementation: "torchvision" (the default, what
every earlier cell ran: float tensors, antialiased resize, nearest-exact masks, crops padded
(black, ignore) before torchvision's photometric kernels) or "mmseg" (MMSeg 1.x's own
operations, benchmark/datasets/mmseg_pipeline.py). `data.channel_order=bgr` feeds either one
the image with its channels reversed, as the released ProtoSeg code (openseg) reads it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from benchmark.datasets.mmseg_pipeline import PHOTOMETRIC, MMSegPipeline
from benchmark.datasets.staging import DeviceNormalise, is_staged

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def rescale_size(h: int, w: int, scale: tuple[int, int] | None, ratio: float = 1.0) -> list[int]:
    """MMSeg's keep-ratio rule: the largest size with long side <= long*ratio and short side <=
    short*ratio for `scale` = (long, short); `scale` None or (0, 0) scales the original by ratio."""
    if scale and scale[0] > 0 and scale[1] > 0:
        factor = min(scale[0] * ratio / max(h, w), scale[1] * ratio / min(h, w))
    else:
        factor = ratio
    return [max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))]


def _first(flat_inputs: list[Any], kind: type) -> Any:
    return next((x for x in flat_inputs if isinstance(x, kind)), None)


class RandomRescale(v2.Transform):
    """Resize image and mask together to the recipe scale times r ~ U(ratio_range) (keep ratio)."""

    def __init__(self, scale: tuple[int, int] | None, ratio_range: tuple[float, float]) -> None:
        super().__init__()
        lo, hi = ratio_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale ratio range must satisfy 0 < min <= max, got {ratio_range}")
        self.scale, self.ratio_range = scale, (float(lo), float(hi))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = F.get_size(_first(flat_inputs, tv_tensors.Image))
        lo, hi = self.ratio_range
        ratio = lo + (hi - lo) * float(torch.rand(())) if hi > lo else lo  # no draw when fixed
        return {"size": rescale_size(h, w, self.scale, ratio)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # masks: nearest-exact (half-pixel centres, like the bilinear image resize), so label
        # edges land where the image's edges do; images: bilinear with antialiasing
        mode = (InterpolationMode.NEAREST_EXACT if isinstance(inpt, tv_tensors.Mask)
                else InterpolationMode.BILINEAR)
        return self._call_kernel(F.resize, inpt, params["size"], interpolation=mode,
                                 antialias=True)


class RandomCropPad(v2.Transform):
    """Random (h, w) crop, padded at the bottom/right with 0 (image) and `ignore_index` (mask)
    where the image is smaller. With `cat_max_ratio` < 1 the crop is redrawn (up to 10 times,
    MMSeg's rule) while one class covers at least that fraction of its labelled pixels."""

    def __init__(self, size: tuple[int, int], ignore_index: int = 255,
                 cat_max_ratio: float = 1.0, tries: int = 10) -> None:
        super().__init__()
        if size[0] <= 0 or size[1] <= 0:
            raise ValueError(f"crop size must be positive, got {size}")
        self.size, self.ignore_index = (int(size[0]), int(size[1])), ignore_index
        self.cat_max_ratio, self.tries = float(cat_max_ratio), tries

    def _draw(self, h: int, w: int) -> tuple[int, int]:
        top = int(torch.randint(0, max(h - self.size[0], 0) + 1, ()))
        left = int(torch.randint(0, max(w - self.size[1], 0) + 1, ()))
        return top, left

    def _balanced(self, mask: torch.Tensor, top: int, left: int) -> bool:
        crop = mask[..., top:top + self.size[0], left:left + self.size[1]]
        values, counts = crop.unique(return_counts=True)
        counts = counts[values != self.ignore_index]
        return len(counts) > 1 and counts.max().item() / counts.sum().item() < self.cat_max_ratio

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = F.get_size(_first(flat_inputs, tv_tensors.Image))
        top, left = self._draw(h, w)
        mask = _first(flat_inputs, tv_tensors.Mask)
        if self.cat_max_ratio < 1.0 and mask is not None:
            for _ in range(self.tries):
                if self._balanced(mask, top, left):
                    break
                top, left = self._draw(h, w)
        ch, cw = self.size
        return {"top": top, "left": left, "height": min(ch, h), "width": min(cw, w),
                "pad": [0, 0, max(cw - w, 0), max(ch - h, 0)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = self._call_kernel(F.crop, inpt, params["top"], params["left"],
                                params["height"], params["width"])
        if any(params["pad"]):
            fill = self.ignore_index if isinstance(inpt, tv_tensors.Mask) else 0
            out = self._call_kernel(F.pad, out, params["pad"], fill=fill)
        return out


class PhotoMetricDistortion(v2.Transform):
    """MMSeg's PhotoMetricDistortion on a float [0, 1] image: each with probability 0.5, additive
    brightness (+-32/255), multiplicative contrast (0.5-1.5, before or after the rest),
    saturation (0.5-1.5) and hue (+-0.1 of the circle, MMSeg's +-18 OpenCV units), using
    torchvision's saturation/hue kernels. mode "brightness": only the released ProtoSeg
    code's additive shift (+-10/255, always applied)."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, mode: str = "mmseg") -> None:
        super().__init__()
        if mode not in PHOTOMETRIC[1:]:
            raise ValueError(f"photometric mode must be one of {PHOTOMETRIC[1:]}, got {mode!r}")
        self.mode = mode

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        u = torch.rand(9).tolist()  # always 9 draws: a fixed RNG stream per sample
        if self.mode == "brightness":
            return {"brightness": (2 * u[0] - 1) * 10 / 255, "contrast": None,
                    "contrast_first": True, "saturation": None, "hue": None}
        return {
            "brightness": (2 * u[1] - 1) * 32 / 255 if u[0] < 0.5 else None,
            "contrast": 0.5 + u[3] if u[2] < 0.5 else None,
            "contrast_first": u[4] < 0.5,
            "saturation": 0.5 + u[6] if u[5] < 0.5 else None,
            "hue": (2 * u[8] - 1) * 0.1 if u[7] < 0.5 else None,
        }

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not inpt.is_floating_point():
            raise TypeError("PhotoMetricDistortion expects a float image in [0, 1]")
        img = inpt.as_subclass(torch.Tensor)
        if params["brightness"] is not None:
            img = (img + params["brightness"]).clamp(0, 1)
        if params["contrast_first"] and params["contrast"] is not None:
            img = (img * params["contrast"]).clamp(0, 1)
        if params["saturation"] is not None:
            img = F.adjust_saturation(img, params["saturation"])
        if params["hue"] is not None:
            img = F.adjust_hue(img, params["hue"])
        if not params["contrast_first"] and params["contrast"] is not None:
            img = (img * params["contrast"]).clamp(0, 1)
        return tv_tensors.wrap(img, like=inpt)


class PairTransform:
    """Calls a v2 pipeline on (uint8 image, label) and returns plain tensors (int64 labels).

    With `finish` (a training pipeline whose steps after the geometry are only ToDtype +
    Normalize) it is staged (benchmark/datasets/staging.py): `host` runs the pipeline on uint8
    in the worker and `finish` normalises the batch on the device; a call does both."""

    def __init__(self, pipeline: v2.Transform, resize_label: bool = True,
                 finish: DeviceNormalise | None = None) -> None:
        self.pipeline, self.resize_label, self.finish = pipeline, resize_label, finish

    @property
    def staged(self) -> bool:
        return self.finish is not None

    def host(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline's own output: uint8 when staged, the finished float image otherwise."""
        if self.resize_label:
            img, mask = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(label))
        else:  # evaluation: the label keeps its original size
            img, mask = self.pipeline(tv_tensors.Image(image)), label
        return img.as_subclass(torch.Tensor).contiguous(), mask.as_subclass(torch.Tensor)

    def __call__(self, image: torch.Tensor,
                 label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img, mask = self.host(image, label)
        if self.finish is None:
            return img, mask.long()
        images, masks = self.finish([img[None], mask[None]])
        return images[0], masks[0]

    def __repr__(self) -> str:
        return f"PairTransform({self.pipeline}{', staged' if self.staged else ''})"


def _normalise() -> list[v2.Transform]:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)]


def train_transform(scale: tuple[int, int] | None = None,
                    ratio_range: tuple[float, float] = (1.0, 1.0),
                    crop: tuple[int, int] | None = None, ignore_index: int = 255,
                    cat_max_ratio: float = 1.0, flip_prob: float = 0.5,
                    photometric: str = "none") -> PairTransform:
    """The training pipeline; `crop` None = whole (rescaled) image."""
    steps: list[v2.Transform] = []
    if scale or ratio_range != (1.0, 1.0):
        steps.append(RandomRescale(scale, ratio_range))
    if crop:
        steps.append(RandomCropPad(crop, ignore_index, cat_max_ratio))
    if flip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(flip_prob))
    if photometric == "none":  # geometry only: uint8 to the batch, normalised on the device
        return PairTransform(v2.Compose(steps),
                             finish=DeviceNormalise(IMAGENET_MEAN, IMAGENET_STD, "torchvision"))
    steps += _normalise() + [PhotoMetricDistortion(photometric),
                             v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return PairTransform(v2.Compose(steps))


def eval_transform(scale: tuple[int, int] | None = None) -> PairTransform:
    """Whole image resized to the recipe scale; the label keeps its original size."""
    steps: list[v2.Transform] = []
    if scale and scale[0] > 0 and scale[1] > 0:
        steps.append(RandomRescale(scale, (1.0, 1.0)))  # fixed ratio: no random draw
    steps += _normalise() + [v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return PairTransform(v2.Compose(steps), resize_label=False)


class BGRInput:
    """openseg's `input_mode: BGR`: cv2.imread's channel order. The decoded RGB image's
    channels are reversed before `pipeline`, so every step sees BGR, and the normalisation
    stays positional (openseg's Normalize: channel i minus mean[i] of the RGB ImageNet mean)."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def __call__(self, image: torch.Tensor,
                 label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pipeline(image.flip(0), label)

    @property
    def staged(self) -> bool:
        return is_staged(self.pipeline)

    @property
    def finish(self) -> Any:
        return self.pipeline.finish

    def host(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.pipeline.host(image.flip(0), label)

    def __repr__(self) -> str:
        return f"BGRInput({self.pipeline!r})"


def transforms_from_spec(spec: Any, split: str) -> PairTransform | MMSegPipeline | BGRInput:
    """The transform a DataSpec asks for: training pipeline on "train", evaluation otherwise,
    in the implementation `spec.pipeline` names."""
    scale = (spec.scale_long, spec.scale_short) if spec.scale_long and spec.scale_short else None
    crop = (spec.crop_size, spec.crop_width or spec.crop_size) if spec.crop_size > 0 else None
    ratios = (spec.min_scale, spec.max_scale)
    if spec.channel_order == "bgr":
        return BGRInput(transforms_from_spec(replace(spec, channel_order="rgb"), split))
    if spec.pipeline == "mmseg":
        return MMSegPipeline(scale, ratios, crop, spec.ignore_index, spec.cat_max_ratio,
                             spec.flip_prob, spec.photometric, train=split == "train")
    if split != "train":
        return eval_transform(scale)
    return train_transform(scale, ratios, crop, spec.ignore_index, spec.cat_max_ratio,
                           spec.flip_prob, spec.photometric)
