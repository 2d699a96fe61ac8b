"""Miniature, format-faithful data-set trees for tests (written into a tmp folder).

Each label map is vertical stripes cycling through a known list of raw values (column j holds
`raw[j % len(raw)]`), so a test knows the raw value and the expected class of every pixel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

CAMVID_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"

# raw label values written by each writer (stripes), and what the loader must turn them into
CAMVID_RAW = (0, 5, 11, 10)  # 11 = void
CAMVID_EXPECT = {0: 0, 5: 5, 11: 255, 10: 10}
ADE_RAW = (0, 1, 75, 150)  # 0 = other
ADE_EXPECT = {0: 255, 1: 0, 75: 74, 150: 149}
CITY_RAW = (0, 7, 26, 33, 255)  # unlabeled, road, car, bicycle, license plate (-1)
CITY_EXPECT = {0: 255, 7: 0, 26: 13, 33: 18, 255: 255}
CITY_TRAIN_IDS_RAW = (255, 0, 13, 18)
CITY_TRAIN_IDS_EXPECT = {255: 255, 0: 0, 13: 13, 18: 18}
COCO_RAW = (0, 1, 13, 92, 182)  # unlabeled, person, stop sign, banner, wood
COCO_EXPECT = {0: 255, 1: 0, 13: 11, 92: 80, 182: 170}


def stripes(raw: tuple[int, ...], h: int, w: int, shift: int = 0) -> np.ndarray:
    """(h, w) uint8 label map: column j holds raw[(j + shift) % len(raw)]."""
    row = np.array([raw[(j + shift) % len(raw)] for j in range(w)], dtype=np.uint8)
    return np.repeat(row[None], h, axis=0)


def expected(raw_map: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """The class-id map a loader must return for `raw_map`."""
    out = np.full(raw_map.shape, -7, dtype=np.int64)
    for raw, cls in mapping.items():
        out[raw_map == raw] = cls
    assert (out != -7).all(), "unexpected raw value in a fixture"
    return out


def rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"quality": 95} if path.suffix == ".jpg" else {}
    Image.fromarray(arr).save(path, **kwargs)
    return path


def write_camvid(parent: Path, counts: dict[str, int] | None = None, h: int = 16,
                 w: int = 24) -> Path:
    """`parent/camvid` in the SegNet layout with PNG images."""
    root = parent / "camvid"
    for k, (split, n) in enumerate((counts or {"train": 4, "val": 2, "test": 2}).items()):
        for i in range(n):
            stem = f"0001TP_{split}{i:03d}"
            save(root / split / f"{stem}.png", rgb(h, w, 100 * k + i))
            save(root / f"{split}annot" / f"{stem}.png", stripes(CAMVID_RAW, h, w, i))
    return root


def write_ade20k(parent: Path, counts: dict[str, int] | None = None, h: int = 12,
                 w: int = 20) -> Path:
    """`parent/ADEChallengeData2016` with JPEG images; the second image is 2 px wider."""
    root = parent / "ADEChallengeData2016"
    folders = {"train": "training", "val": "validation"}
    for split, n in (counts or {"train": 3, "val": 2}).items():
        for i in range(n):
            stem = f"ADE_{folders[split]}_{i + 1:08d}"
            ww = w + 2 * (i % 2)
            save(root / "images" / folders[split] / f"{stem}.jpg", rgb(h, ww, i))
            save(root / "annotations" / folders[split] / f"{stem}.png",
                 stripes(ADE_RAW, h, ww, i))
    return root


def write_cityscapes(parent: Path, train_ids: bool = False, counts: dict[str, int] | None = None,
                     h: int = 8, w: int = 16) -> Path:
    """`parent/cityscapes` with labelIds (or labelTrainIds) maps plus the other gtFine files."""
    root = parent / "cityscapes"
    raw = CITY_TRAIN_IDS_RAW if train_ids else CITY_RAW
    suffix = "_gtFine_labelTrainIds.png" if train_ids else "_gtFine_labelIds.png"
    for split, n in (counts or {"train": 3, "val": 2}).items():
        for i in range(n):
            city = ("aachen", "bochum")[i % 2]
            name = f"{city}_{i:06d}_000019"
            save(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", rgb(h, w, i))
            gt = root / "gtFine" / split / city
            save(gt / f"{name}{suffix}", stripes(raw, h, w, i))
            save(gt / f"{name}_gtFine_color.png", rgb(h, w, i + 50))  # distractors
            save(gt / f"{name}_gtFine_instanceIds.png", stripes((0, 26), h, w))
            (gt / f"{name}_gtFine_polygons.json").write_text("{}")
    return root


def write_coco_stuff10k(parent: Path, counts: dict[str, int] | None = None, h: int = 10,
                        w: int = 14) -> Path:
    """`parent/coco_stuff10k`: JPEG images, .mat annotations (field S) and imageLists."""
    root = parent / "coco_stuff10k"
    (root / "imageLists").mkdir(parents=True)
    (root / "annotations").mkdir()
    everything = []
    for split, n in (counts or {"train": 3, "test": 2}).items():
        stems = [f"COCO_{split}2014_{i + 1:012d}" for i in range(n)]
        for i, stem in enumerate(stems):
            save(root / "images" / f"{stem}.jpg", rgb(h, w, i))
            label = stripes(COCO_RAW, h, w, i).astype(np.uint16)  # S is stored as uint16
            scipy.io.savemat(root / "annotations" / f"{stem}.mat",
                             {"S": label, "names": np.array(["unlabeled"], dtype=object),
                              "captions": np.array(["a caption"], dtype=object)})
        (root / "imageLists" / f"{split}.txt").write_text("\n".join(stems) + "\n")
        everything += stems
    (root / "imageLists" / "all.txt").write_text("\n".join(everything) + "\n")
    return root


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time (to prove nothing changed)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}
