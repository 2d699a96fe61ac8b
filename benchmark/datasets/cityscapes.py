"""Cityscapes (fine annotations): 34 label ids -> 19 train ids, everything else ignored.

Layout: `leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png` with
`gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png`; pre-converted
`<name>_gtFine_labelTrainIds.png` (cityscapesScripts / MMSegmentation) are used when present.
2975 / 500 images of 2048x1024.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.datasets.base import (DatasetDef, Listing, inverse_lut, list_files, make_lut,
                                     match_pairs, require_dir)

CLASS_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
               "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
               "truck", "bus", "train", "motorcycle", "bicycle")
PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
           (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
           (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
           (0, 80, 100), (0, 0, 230), (119, 11, 32))
# label id -> train id of the 19 evaluated classes (cityscapesScripts labels.py); ids 0-33 not
# listed here are "ignore in eval", and 255 is the uint8 form of id -1 (license plate)
ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                  24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
IGNORED_IDS = tuple(sorted(set(range(34)) - set(ID_TO_TRAIN_ID))) + (255,)
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIXES = {"train_ids": "_gtFine_labelTrainIds.png", "raw": "_gtFine_labelIds.png"}


def _keyed(files: list[Path], base: Path, suffix: str) -> dict[str, Path]:
    """'<city>/<name>' -> file, for files named <name><suffix>."""
    return {str(p.relative_to(base))[: -len(suffix)]: p for p in files if p.name.endswith(suffix)}


def list_split(root: Path, split: str) -> Listing:
    """Pairs each leftImg8bit image with its labelTrainIds map if present, else its labelIds."""
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    require_dir(image_dir, CITYSCAPES)
    require_dir(label_dir, CITYSCAPES)
    images = _keyed(list_files(image_dir, (IMAGE_SUFFIX,), recursive=True), image_dir,
                    IMAGE_SUFFIX)
    gt = list_files(label_dir, tuple(LABEL_SUFFIXES.values()), recursive=True)
    labels: dict[str, Path] = {}
    encodings: dict[str, str] = {}
    for encoding in ("raw", "train_ids"):  # train ids win when both exist
        for key, path in _keyed(gt, label_dir, LABEL_SUFFIXES[encoding]).items():
            labels[key], encodings[key] = path, encoding
    return match_pairs(images, labels,
                       lambda k: label_dir / f"{k}{LABEL_SUFFIXES['raw']}",
                       lambda k: image_dir / f"{k}{IMAGE_SUFFIX}", encodings)


_RAW = make_lut(ID_TO_TRAIN_ID, ignore=IGNORED_IDS)
_TRAIN_IDS = make_lut({i: i for i in range(19)}, ignore=(255,))

CITYSCAPES = DatasetDef(
    name="cityscapes",
    title="Cityscapes",
    folder="cityscapes",
    class_names=CLASS_NAMES,
    palette=PALETTE,
    split_counts={"train": 2975, "val": 500},
    luts={"raw": _RAW, "train_ids": _TRAIN_IDS},
    to_raw={"train_ids": inverse_lut(_TRAIN_IDS, _RAW, unlabelled=0)},
    markers=("leftImg8bit", "gtFine"),
    layout="cityscapes/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png with "
           "cityscapes/gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png "
           "(or _gtFine_labelTrainIds.png)",
    list_split=list_split,
)
