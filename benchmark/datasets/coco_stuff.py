"""COCO-Stuff-10K (v1.1): 182 COCO ids -> 171 classes, 0 = unlabelled (ignored).

Layout: `images/<stem>.jpg`, `annotations/<stem>.mat` (MATLAB file, field `S`: uint8 ids),
`imageLists/{train,test}.txt` (one stem per line). 9000 / 1000 images. The 11 ids that COCO
never uses (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91) must not occur; the others map to
0..170 in id order, as MMSegmentation's converter + reduce_zero_label do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.datasets.base import (DataError, DatasetDef, Listing, Pair, first_line, make_lut,
                                     require_dir)
from benchmark.datasets.synthetic import display_palette

CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush", "banner", "blanket", "branch", "bridge", "building-other", "bush",
    "cabinet", "cage", "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth",
    "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff",
    "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood",
    "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel",
    "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff",
    "moss", "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other",
    "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock",
    "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow",
    "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent",
    "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete",
    "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood",
)
UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
COCO_IDS = tuple(i for i in range(1, 183) if i not in UNUSED_IDS)  # class c <- COCO_IDS[c]
PALETTE = tuple(display_palette(len(CLASS_NAMES)))  # distinct colours (PASCAL VOC colour map)


def read_mat_label(path: Path) -> np.ndarray:
    """The `S` array of a COCO-Stuff-10K annotation .mat file."""
    import scipy.io  # only needed for this data set

    try:
        mat = scipy.io.loadmat(str(path), variable_names=["S"])
    except Exception as err:  # noqa: BLE001 - scipy raises many kinds on a corrupt file
        raise DataError(f"cannot read annotation {path} ({first_line(err)}); the file is corrupt: "
                        f"re-download / re-extract it or delete the pair") from None
    if "S" not in mat:
        raise DataError(f"annotation {path} has no field S (the label map of COCO-Stuff-10K "
                        f"v1.1); re-download the annotations")
    label = np.asarray(mat["S"])
    if label.ndim != 2:
        raise DataError(f"annotation {path}: field S has shape {label.shape}; expected (H, W)")
    return label


def list_split(root: Path, split: str) -> Listing:
    """Pairs for each stem of `imageLists/<split>.txt`."""
    list_file = root / "imageLists" / f"{split}.txt"
    require_dir(root / "images", COCO_STUFF10K)
    require_dir(root / "annotations", COCO_STUFF10K)
    if not list_file.is_file():
        raise DataError(f"missing split list {list_file}; {COCO_STUFF10K.title} expects "
                        f"{COCO_STUFF10K.layout}")
    pairs, problems = [], []
    stems = [s.strip() for s in list_file.read_text().splitlines() if s.strip()]
    for stem in stems:
        image, label = root / "images" / f"{stem}.jpg", root / "annotations" / f"{stem}.mat"
        has_image, has_label = image.is_file(), label.is_file()
        if has_image and has_label:
            pairs.append(Pair(image, label))
        elif has_image:
            problems.append(f"image {image} has no label map (expected {label}); restore the "
                            f"annotation or remove {stem} from {list_file}")
        elif has_label:
            problems.append(f"label map {label} has no image (expected {image}); restore the "
                            f"image or remove {stem} from {list_file}")
        else:
            problems.append(f"{list_file} lists {stem} but neither {image} nor {label} exists; "
                            f"re-extract the data set")
    return Listing(pairs, problems)


COCO_STUFF10K = DatasetDef(
    name="coco_stuff10k",
    title="COCO-Stuff-10K",
    folder="coco_stuff10k",
    class_names=CLASS_NAMES,
    palette=PALETTE,
    split_counts={"train": 9000, "test": 1000},
    luts={"raw": make_lut({coco: c for c, coco in enumerate(COCO_IDS)}, ignore=(0,))},
    markers=("images", "annotations", "imageLists"),
    layout="coco_stuff10k/images/<stem>.jpg, coco_stuff10k/annotations/<stem>.mat (field S) and "
           "coco_stuff10k/imageLists/{train,test}.txt",
    list_split=list_split,
    read_label=read_mat_label,
)
