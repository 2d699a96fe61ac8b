"""Validation of a cell: allowed values and ranges the field types alone cannot express.

Torch-free (names come from `benchmark.catalog`), so `--dry-run` and `--set` stay fast; every
problem is one ConfigError line naming the key and the fix.
"""

from __future__ import annotations

import math

from benchmark import catalog  # names only: validating must not import torch
from benchmark.config import Cell, ConfigError, DataSpec, get_path, override_keys
from benchmark.ranges import check_ranges

CHOICES: dict[str, tuple[str, ...]] = {  # a head's own choices and ranges: its options class
    "train.optimizer": ("sgd", "adamw"),
    "eval.mode": ("whole", "slide"),
    "eval.logit_resize": ("direct", "via_input", "openseg"),
    "train.lr_schedule": ("poly", "mmengine"),
    "train.param_groups": ("no_decay_1d", "decay_all", "segformer", "swin"),
    "train.ce_average": ("labelled", "all_pixels"),
    "train.ce_weights": ("none", "protoseg_cityscapes"),
    "model.init": ("library", "mmseg"),
    "data.format": ("native", "hf"), "data.photometric": ("none", "mmseg", "brightness"),
    "data.pipeline": ("torchvision", "mmseg"), "data.channel_order": ("rgb", "bgr"),
}


def validate(cell: Cell) -> Cell:
    """Check choices and ranges that the type alone cannot; returns the cell unchanged."""
    for key, registry in (("data.name", catalog.DATASETS), ("model.backbone", catalog.BACKBONES),
                          ("model.decoder", catalog.DECODERS)):
        if get_path(cell, key) not in registry:  # plugins' names load here when asked for
            raise ConfigError(f"bad value for {key}: {get_path(cell, key)!r}; choose one of "
                              f"{', '.join(registry.names())}")
    head = cell.model.head
    for problem in head.options.problems():
        raise ConfigError(f"bad value for model.head.{problem}")
    for key in override_keys(cell):  # NaN passes every `<= 0` test below: refuse it first
        value = get_path(cell, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"bad value for {key}: {value} is not a finite number; "
                              f"give a finite one, e.g. {key}={get_path(Cell('', ''), key)}")
    for key, allowed in CHOICES.items():
        value = get_path(cell, key)
        if value not in allowed:
            raise ConfigError(f"bad value for {key}: {value!r}; choose one of {', '.join(allowed)}")
    positive = ["data.num_classes", "train.iters", "train.batch_size", "eval.batch_size",
                "model.decoder_channels", "train.lr"]
    for key in positive:
        if get_path(cell, key) <= 0:
            raise ConfigError(f"bad value for {key}: must be > 0")
    for key in ("model.aux_weight", "data.crop_size", "data.crop_width", "train.min_lr"):
        if get_path(cell, key) < 0:
            raise ConfigError(f"bad value for {key}: must be >= 0")
    e = cell.eval
    if e.mode == "slide" and not (0 < e.stride_h <= e.window_h and 0 < e.stride_w <= e.window_w):
        raise ConfigError("bad value for eval.window_h/w, eval.stride_h/w: slide mode needs "
                          "0 < stride <= window in both directions")
    _check_data(cell.data)
    check_ranges(cell)  # data, train and eval ranges (benchmark/ranges.py)
    return cell


def _check_data(d: DataSpec) -> None:
    """`validate`'s data rules: ranges, and no HSV distortion of a BGR image."""
    if d.scale_long < 0 or d.scale_short < 0:
        raise ConfigError("bad value for data.scale_long / data.scale_short: must be >= 0")
    if not 0 < d.min_scale <= d.max_scale:
        raise ConfigError("bad value for data.min_scale / data.max_scale: need 0 < min <= max")
    if not 0 <= d.flip_prob <= 1:
        raise ConfigError("bad value for data.flip_prob: must be in [0, 1]")
    if not 0 < d.cat_max_ratio <= 1:
        raise ConfigError("bad value for data.cat_max_ratio: must be in (0, 1]")
    if 0 <= d.ignore_index < d.num_classes:
        raise ConfigError("bad value for data.ignore_index: it must not be a class id (use 255)")
    if d.channel_order == "bgr" and d.photometric == "mmseg":
        raise ConfigError("data.channel_order=bgr with data.photometric=mmseg: its saturation and "
                          "hue steps assume RGB; use photometric=brightness or none")
