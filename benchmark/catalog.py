"""Every registry a config names, torch-free: the models' (methods/catalog.py) and the data sets'.

`validation.validate` and the `--dry-run` plan need only names and descriptions, and `import
torch` alone takes longer than a dry run may (2.45 s on a small CPU machine); each entry's
builder loads on first use. A data set registers with one line: its builders and its default
recipe (MMSeg's DataSpec fields), which experiments/recipes.py reads.
"""

from __future__ import annotations

from typing import Any

from methods.catalog import BACKBONES, DECODERS, HEADS
from methods.registry import Registry, plugin_origins

DATASETS = Registry("dataset")


def _mmseg(num_classes: int, val_split: str, scale: tuple[int, int],
           crop: tuple[int, int]) -> dict[str, Any]:
    """DataSpec fields of MMSegmentation's recipe for one data set: rescale by 0.5-2.0 of
    `scale` (long, short), random `crop` (height, width), flip, photometric distortion."""
    return {"num_classes": num_classes, "val_split": val_split, "scale_long": scale[0],
            "scale_short": scale[1], "min_scale": 0.5, "max_scale": 2.0, "crop_size": crop[0],
            "crop_width": crop[1], "cat_max_ratio": 0.75, "flip_prob": 0.5,
            "photometric": "mmseg"}


DATASETS.register("synthetic", "benchmark.datasets:SYNTHETIC", display="generated shapes")
DATASETS.register("ade20k", "benchmark.datasets:REAL", display="ADE20K",
                  info={"recipe": _mmseg(150, "val", (2048, 512), (512, 512))})
DATASETS.register("cityscapes", "benchmark.datasets:REAL", display="Cityscapes",
                  info={"recipe": _mmseg(19, "val", (2048, 1024), (512, 1024))})
DATASETS.register("coco_stuff10k", "benchmark.datasets:REAL", display="COCO-Stuff-10K",
                  info={"recipe": _mmseg(171, "test", (2048, 512), (512, 512))})
DATASETS.register("camvid", "benchmark.datasets:REAL", display="CamVid",
                  info={"recipe": _mmseg(11, "test", (480, 360), (360, 480))})


def dataset_recipe(name: str) -> dict[str, Any]:
    """DataSpec fields of a real data set's default recipe (MMSeg configs of the same names)."""
    recipe = DATASETS.get(name).info.get("recipe")
    if recipe is None:
        raise KeyError(f"data set {name!r} registers no default recipe")
    return dict(recipe)




REGISTRIES = {r.kind: r for r in (HEADS, BACKBONES, DECODERS, DATASETS)}


def cell_plugins(cell: Any) -> list[dict[str, str]]:
    """The plugin packages a cell's components come from (kind, name, package, version,
    module): part of its record, and imported by every worker before it rebuilds the cell."""
    return plugin_origins([(HEADS, cell.model.head.name), (BACKBONES, cell.model.backbone),
                           (DECODERS, cell.model.decoder), (DATASETS, cell.data.name)])


__all__ = ["BACKBONES", "DATASETS", "DECODERS", "HEADS", "REGISTRIES", "cell_plugins",
           "dataset_recipe"]
