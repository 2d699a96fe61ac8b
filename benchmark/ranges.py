"""Ranges that make sense for the data, training and evaluation settings and the command-line
flags: a value outside them is refused in one line before any work.

Types alone let through `data.image_size=0`, `train.iters=10**23`, a CamVid crop of 4000 pixels
(larger than its images at their largest training scale), `--seeds 100000000` (a dry run that
plans for minutes) or `--sigma -1`. The bounds are generous (ten times the paper's largest
recipe), so no real recipe meets them; the head options' ranges live with the heads
(methods/heads/options.py). Torch-free, like benchmark/validation.py which calls it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmark.config import Cell, ConfigError, get_path

MAX_SEEDS = 1000  # seeds per cell: 80% power for a 0.1-mIoU gain needs fewer
MAX_SIGMA = 50.0  # sd of one run's mIoU (a percentage) cannot exceed half its range
MAX_SIDE = 8192  # pixels: image, crop, scale and window sides
MAX_ITERS = 10_000_000  # the paper's longest schedule is 160k steps
SEED_LIMIT = 2 ** 32  # numpy's and torch's seeds are 32-bit

# key: (lowest, highest), both allowed; None: no bound on that side
RANGES: dict[str, tuple[float | None, float | None]] = {
    "data.num_classes": (2, 1000),
    "data.image_size": (16, 2048),  # synthetic: squares of at least 16 (its generator's rule)
    "data.modes_per_class": (1, 64),
    "data.train_images": (1, 1_000_000),
    "data.val_images": (1, 1_000_000),
    "data.data_seed": (0, SEED_LIMIT - 1),
    "data.crop_size": (0, MAX_SIDE),
    "data.crop_width": (0, MAX_SIDE),
    "data.scale_long": (0, MAX_SIDE),
    "data.scale_short": (0, MAX_SIDE),
    "data.min_scale": (None, 16.0),
    "data.max_scale": (None, 16.0),
    "train.iters": (1, MAX_ITERS),
    "train.batch_size": (1, 4096),
    "train.momentum": (0.0, 1.0),
    "train.weight_decay": (0.0, 1.0),
    "train.poly_power": (0.0, 10.0),
    "train.warmup_iters": (0, MAX_ITERS),
    "train.warmup_ratio": (0.0, 1.0),
    "train.grad_clip": (0.0, None),
    "train.num_workers": (-1, 256),
    "train.log_every": (1, MAX_ITERS),
    "train.checkpoint_every": (0, None),
    "eval.batch_size": (1, 4096),
    "eval.window_h": (0, MAX_SIDE),
    "eval.window_w": (0, MAX_SIDE),
    "eval.stride_h": (0, MAX_SIDE),
    "eval.stride_w": (0, MAX_SIDE),
}

# Each real data set's largest image (long side, short side) as released, for a recipe
# without a rescale step; ADE20K's sizes vary too widely for a useful bound.
LARGEST_IMAGE = {"camvid": (480, 360), "cityscapes": (2048, 1024), "coco_stuff10k": (640, 640)}
TITLES = {"camvid": "CamVid", "cityscapes": "Cityscapes", "coco_stuff10k": "COCO-Stuff 10k",
          "ade20k": "ADE20K"}


def _rule(low: float | None, high: float | None) -> str:
    if low is None:
        return f"at most {high:g}"
    if high is None:
        return f"at least {low:g}"
    return f"between {low:g} and {high:g}"


def check_ranges(cell: Cell) -> None:
    """ConfigError (one line: key, value, allowed range) for the first setting out of range."""
    for key, (low, high) in RANGES.items():
        value = get_path(cell, key)
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"bad value for {key}: {value!r}; give a value {_rule(low, high)}")
    t = cell.train
    if t.min_lr > t.lr:
        raise ConfigError(f"bad value for train.min_lr: {t.min_lr:g} is above train.lr="
                          f"{t.lr:g}; give at most {t.lr:g}")
    _check_crop(cell)


def largest_training_image(cell: Cell) -> tuple[int, int] | None:
    """(long, short) side of the largest image the cell's training pipeline can produce
    (after its rescale and largest ratio); None where unknown (ADE20K without a scale)."""
    d = cell.data
    if d.scale_long or d.scale_short:
        long_side = d.scale_long or d.scale_short
        short_side = d.scale_short or d.scale_long
    elif d.name in LARGEST_IMAGE:
        long_side, short_side = LARGEST_IMAGE[d.name]
    else:
        return None
    ratio = max(1.0, d.max_scale)
    return math.floor(long_side * ratio), math.floor(short_side * ratio)


def _check_crop(cell: Cell) -> None:
    """A training crop larger than every image the pipeline can produce is padding, not data."""
    d = cell.data
    if d.name == "synthetic" or not d.crop_size:
        return
    largest = largest_training_image(cell)
    if largest is None:
        return
    crop = (d.crop_size, d.crop_width or d.crop_size)
    if max(crop) > largest[0] or min(crop) > largest[1]:
        title = TITLES.get(d.name, d.name)
        raise ConfigError(
            f"bad value for data.crop_size/crop_width: a {crop[0]}x{crop[1]} crop is larger than "
            f"{title}'s images at their largest training scale ({largest[0]}x{largest[1]}: "
            f"data.scale_long/scale_short x data.max_scale); give a crop of at most "
            f"{largest[1]}x{largest[0]}")


def check_flags(args: Any) -> None:
    """The numeric command-line flags and an explicit `--checkpoint` path; ConfigError."""
    seeds = getattr(args, "seeds", None)
    if isinstance(seeds, int) and not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds {seeds}: give a number of seeds between 1 and {MAX_SEEDS}")
    sigma = getattr(args, "sigma", None)
    if sigma is not None and not (math.isfinite(sigma) and 0 < sigma <= MAX_SIGMA):
        raise ConfigError(f"--sigma {sigma:g}: the per-run sd of mIoU must be a number above 0 "
                          f"and at most {MAX_SIGMA:g}, e.g. --sigma 0.5")
    for flag, low, high in (("max_parallel", 1, 100_000), ("gpus_per_run", 0, 64),
                            ("timeout_min", 1, 525_600)):
        value = getattr(args, flag, None)
        if value is not None and not low <= value <= high:
            raise ConfigError(f"--{flag.replace('_', '-')} {value}: give a value between "
                              f"{low} and {high}")
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint and not Path(checkpoint).expanduser().exists():
        raise ConfigError(f"--checkpoint {checkpoint} does not exist; give a checkpoint file or "
                          f"a folder of them")
