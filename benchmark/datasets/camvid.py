"""CamVid, SegNet layout: `train/ trainannot/ val/ valannot/ test/ testannot/`, 11 classes.

Images (`.png` or `.jpg`) and single-channel PNG label maps share their stem; label 11 is
"void" (ignored). 367 / 101 / 233 images of 480x360.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.datasets.base import DatasetDef, Listing, make_lut, pair_folders

CLASS_NAMES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence",
               "car", "pedestrian", "bicyclist")
PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
           (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
           (0, 128, 192))  # SegNet tutorial colours; void is (0, 0, 0)
VOID = 11


def list_split(root: Path, split: str) -> Listing:
    """Pairs `root/<split>/<stem>.{png,jpg}` with `root/<split>annot/<stem>.png`."""
    return pair_folders(root / split, root / f"{split}annot", CAMVID, ".png")


CAMVID = DatasetDef(
    name="camvid",
    title="CamVid",
    folder="camvid",
    class_names=CLASS_NAMES,
    palette=PALETTE,
    split_counts={"train": 367, "val": 101, "test": 233},
    luts={"raw": make_lut({i: i for i in range(len(CLASS_NAMES))}, ignore=(VOID,))},
    markers=("train", "trainannot"),
    layout="camvid/{train,val,test}/<stem>.png|jpg with camvid/{train,val,test}annot/<stem>.png "
           "(SegNet layout)",
    list_split=list_split,
)
