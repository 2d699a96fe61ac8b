"""The names a config may use and each real data set's default recipe, without importing torch.

`validation.validate` and the `--dry-run` plan need only these, and `import torch` alone takes
longer than a dry run may (2.45 s on a small CPU machine), so they live here rather than in the
registries that build things (`methods.BACKBONES`, `benchmark.datasets.DATASETS`, ...).
tests/benchmark/test_config.py checks that every name here has a builder there and the other way
round.
"""

from __future__ import annotations

from typing import Any

from methods.heads.options import HEAD_OPTIONS

BACKBONE_NAMES = ("resnet101_d8", "hrnetv2_w48", "swin_b", "mit_b4", "mit_b2", "resnet18_d8",
                  "hrnetv2_w18_small", "swin_t", "mit_b0", "hrnetv2_w48_openseg")
DECODER_NAMES = ("fcn", "mlp", "hrnetv2", "upernet", "mlp_mmseg", "hrnetv2_openseg")
HEAD_NAMES = tuple(HEAD_OPTIONS)  # each head names itself next to its options (torch-free)


def _mmseg(num_classes: int, val_split: str, scale: tuple[int, int],
           crop: tuple[int, int]) -> dict[str, Any]:
    """DataSpec fields of MMSegmentation's recipe for one data set: rescale by 0.5-2.0 of
    `scale` (long, short), random `crop` (height, width), flip, photometric distortion."""
    return {"num_classes": num_classes, "val_split": val_split, "scale_long": scale[0],
            "scale_short": scale[1], "min_scale": 0.5, "max_scale": 2.0, "crop_size": crop[0],
            "crop_width": crop[1], "cat_max_ratio": 0.75, "flip_prob": 0.5,
            "photometric": "mmseg"}


# DataSpec fields of each real data set's default recipe (MMSeg configs of the same names).
DATASET_RECIPES: dict[str, dict[str, Any]] = {
    "ade20k": _mmseg(150, "val", (2048, 512), (512, 512)),
    "cityscapes": _mmseg(19, "val", (2048, 1024), (512, 1024)),
    "coco_stuff10k": _mmseg(171, "test", (2048, 512), (512, 512)),
    "camvid": _mmseg(11, "test", (480, 360), (360, 480)),
}
REAL_DATASET_NAMES = tuple(DATASET_RECIPES)
DATASET_NAMES = ("synthetic", *REAL_DATASET_NAMES)
