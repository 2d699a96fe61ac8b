"""Shared machinery of the real data sets: definitions, image/label pairs, decoding and errors.

A `DatasetDef` says everything the suite knows about one data set (classes, palette, expected
split sizes, how to find pairs on disk, how raw label values map to class ids). A *source*
yields raw (image, label) items: `NativeSource` from the data set's own files, `hf.HFSource`
from a Hugging Face copy. `SegmentationDataset` decodes, checks and transforms them.
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IGNORE = -1  # LUT entry: this raw value means "unlabelled" (becomes spec.ignore_index)
INVALID = -2  # LUT entry: this raw value must not occur in a label map
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DataError(ValueError):
    """Bad data on disk or a data set that cannot be found; one line naming the file and the fix."""


@dataclass(frozen=True)
class Pair:
    """One image and its label map; `encoding` names the LUT of the data set that decodes it."""

    image: Path
    label: Path
    encoding: str = "raw"


@dataclass(frozen=True)
class Listing:
    """The pairs of one split plus one message per file that has no partner."""

    pairs: list[Pair]
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading files


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def decode_rgb(source: Path | BinaryIO) -> torch.Tensor:
    """uint8 (3, H, W) RGB tensor of an encoded image (file path or file object), via Pillow.

    A channels-first *view* of the decoded (H, W, 3) array, not a copy: the mmseg pipeline
    works on that array as it is (`image.permute(1, 2, 0).numpy()` costs nothing), and the
    torchvision pipeline's kernels take either layout."""
    with Image.open(source) as im:
        arr = np.array(im if im.mode == "RGB" else im.convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1)


def read_image(path: Path) -> torch.Tensor:
    """uint8 (3, H, W) RGB tensor of an image file; DataError if it cannot be decoded."""
    try:
        return decode_rgb(path)
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot read image {path} ({first_line(err)}); the file is corrupt or "
                        f"not an image: re-download / re-extract it or delete the pair") from None


def decode_label_image(source: Path | BinaryIO) -> np.ndarray:
    """Array of an encoded label image (file path or file object), via Pillow, as stored: the one
    decoder of on-disk and Hugging Face label maps, so both formats give identical items."""
    with Image.open(source) as im:
        return np.asarray(im)


def read_png_label(path: Path) -> np.ndarray:
    """(H, W) integer array of a single-channel label image (L, P or 16-bit mode)."""
    try:
        arr = decode_label_image(path)
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot read label map {path} ({first_line(err)}); the file is corrupt: "
                        f"re-download / re-extract it or delete the pair") from None
    if arr.ndim != 2:
        raise DataError(f"label map {path} has {arr.shape[-1]} channels; expected a "
                        f"single-channel map of class ids (not a colour visualisation)")
    return arr


@dataclass(frozen=True, eq=False)
class DatasetDef:
    """Everything the suite knows about one data set (see the modules beside this one)."""

    name: str  # registry name, e.g. "camvid"
    title: str  # for messages, e.g. "CamVid"
    folder: str  # default subfolder below a data parent, e.g. "camvid"
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    split_counts: dict[str, int]  # official image count per split (for the layout check)
    luts: dict[str, np.ndarray]  # encoding -> (256,) int64: raw value -> class id, IGNORE, INVALID
    markers: tuple[str, ...]  # relative paths that identify the data set's root folder
    layout: str  # the expected layout, one line, for error messages
    list_split: Callable[[Path, str], Listing]  # (root, split) -> pairs; DataError on bad layout
    read_label: Callable[[Path], np.ndarray] = read_png_label  # label file -> raw (H, W) array
    to_raw: dict[str, np.ndarray] = field(default_factory=dict)  # encoding -> (256,) LUT to "raw"

    def __post_init__(self) -> None:
        if len(self.palette) != len(self.class_names):
            raise ValueError(f"{self.name}: {len(self.palette)} colours for "
                             f"{len(self.class_names)} classes")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.split_counts)

    def check_split(self, split: str) -> None:
        """DataError naming the valid splits (and the fix) when `split` is not one of them."""
        if split not in self.split_counts:
            raise DataError(f"{self.title} has no split {split!r}; it has "
                            f"{', '.join(self.splits)}: set data.val_split to one of them")

    def raw_values(self, encoding: str = "raw") -> str:
        """The raw label values allowed in `encoding`, e.g. '0-11' or '0-33, 255'."""
        return _ranges(np.flatnonzero(self.luts[encoding] != INVALID).tolist())


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts: list[str] = []
    start = prev = None
    for v in values + [None]:
        if start is not None and (v is None or v != prev + 1):
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = None
        if v is not None and start is None:
            start = v
        prev = v
    return ", ".join(parts)


def make_lut(mapping: dict[int, int], ignore: tuple[int, ...] = ()) -> np.ndarray:
    """(256,) int64 LUT: mapped raw values -> class id, `ignore` -> IGNORE, the rest INVALID."""
    lut = np.full(256, INVALID, dtype=np.int64)
    for raw, cls in mapping.items():
        lut[raw] = cls
    for raw in ignore:
        lut[raw] = IGNORE
    return lut


def inverse_lut(lut: np.ndarray, target: np.ndarray, unlabelled: int) -> np.ndarray:
    """(256,) LUT from `lut`'s encoding to the raw values of `target` with the same class."""
    inv = np.full(256, unlabelled, dtype=np.int64)
    for raw in range(255, -1, -1):  # the smallest raw id of a class wins
        cls = target[raw]
        if cls >= 0:
            inv[np.flatnonzero(lut == cls)] = raw
    return inv


def decode_label(raw: np.ndarray, lut: np.ndarray, ignore_index: int, where: str,
                 definition: DatasetDef, encoding: str = "raw",
                 compact: bool = False) -> torch.Tensor:
    """int64 (H, W) class ids (ignore -> `ignore_index`); DataError on a value outside the LUT.

    `compact`: uint8 instead when every class id and the ignore value fit (MMSeg's label type;
    a quarter of the bytes through a DataLoader's queue). uint8 label files take one table
    look-up and a histogram (the check), not an int64 copy of the map."""
    raw = np.asarray(raw)
    if raw.dtype == np.uint8:
        return _decode_uint8_label(raw, lut, ignore_index, where, definition, encoding, compact)
    if raw.dtype.kind not in "iub":
        raise DataError(f"label map {where} holds {raw.dtype} values; expected integer class ids")
    bad_range = (raw < 0) | (raw > 255) if raw.size else np.zeros(0, bool)
    if bad_range.any():
        _bad_value(int(raw[bad_range].flat[0]), where, definition, encoding)
    mapped = lut[raw.astype(np.int64)]
    invalid = mapped == INVALID
    if invalid.any():
        _bad_value(int(raw[invalid].flat[0]), where, definition, encoding)
    mapped[mapped == IGNORE] = ignore_index
    return torch.from_numpy(mapped)


def _decode_uint8_label(raw: np.ndarray, lut: np.ndarray, ignore_index: int, where: str,
                        definition: DatasetDef, encoding: str, compact: bool) -> torch.Tensor:
    """`decode_label` of a uint8 map: a histogram finds values outside the LUT, one look-up
    in a (256,) table maps the rest (equal to the int64 path, value for value)."""
    from benchmark.datasets.mmseg_pipeline import _cv2

    cv2 = _cv2()  # a 256-bin histogram and a table look-up on uint8, each one pass
    invalid, table, small = _label_tables(lut, ignore_index)
    if raw.size:
        counts = cv2.calcHist([np.ascontiguousarray(raw)], [0], None, [256], [0, 256])
        bad = np.flatnonzero(counts.ravel()[invalid])
        if bad.size:
            _bad_value(int(np.flatnonzero(invalid)[bad[0]]), where, definition, encoding)
    if compact and small is not None:
        out = cv2.LUT(raw, small) if raw.size else raw.copy()
        return torch.from_numpy(out.reshape(raw.shape))
    return torch.from_numpy(table[raw])


_TABLES: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = {}


def _label_tables(lut: np.ndarray, ignore_index: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(INVALID mask, int64 table, uint8 table or None where ids do not fit) of a LUT, made
    once per LUT (the data sets' LUTs live as long as the process)."""
    key = (id(lut), ignore_index)
    cached = _TABLES.get(key)
    if cached is None or cached[0] is not lut:
        table = np.where(lut == IGNORE, ignore_index, lut)
        fits = 0 <= ignore_index <= 255 and int(table.max()) <= 255
        cached = (lut, lut == INVALID, table,
                  table.clip(0, 255).astype(np.uint8) if fits else None)
        _TABLES[key] = cached
    return cached[1], cached[2], cached[3]


def _bad_value(value: int, where: str, definition: DatasetDef, encoding: str) -> None:
    raise DataError(
        f"label value {value} in {where} is outside [0, {definition.num_classes}) and is not the "
        f"ignore value: {definition.title} {encoding} labels take the values "
        f"{definition.raw_values(encoding)}; fix or delete this label map, or choose the right "
        f"data set (data.name)"
    )


# --------------------------------------------------------------------------- listing files


def list_files(folder: Path, suffixes: tuple[str, ...], recursive: bool = False) -> list[Path]:
    """Sorted files under `folder` whose lower-case name ends with one of `suffixes`."""
    out: list[Path] = []
    lowered = tuple(s.lower() for s in suffixes)
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        out += [Path(dirpath) / f for f in filenames
                if not f.startswith(".") and f.lower().endswith(lowered)]
    return sorted(out)


def require_dir(folder: Path, definition: DatasetDef) -> None:
    """DataError naming the missing split folder and the expected layout."""
    if not folder.is_dir():
        raise DataError(f"missing folder {folder}; {definition.title} expects {definition.layout}")


def match_pairs(images: dict[str, Path], labels: dict[str, Path],
                expected_label: Callable[[str], Path], expected_image: Callable[[str], Path],
                encodings: dict[str, str] | None = None) -> Listing:
    """Pairs of equal keys; every key on one side only becomes a problem naming the missing file."""
    pairs, problems = [], []
    for key in sorted(images):
        if key in labels:
            enc = (encodings or {}).get(key, "raw")
            pairs.append(Pair(images[key], labels[key], enc))
        else:
            problems.append(f"image {images[key]} has no label map (expected "
                            f"{expected_label(key)}); restore the label map or delete the image")
    for key in sorted(set(labels) - set(images)):
        problems.append(f"label map {labels[key]} has no image (expected {expected_image(key)}); "
                        f"restore the image or delete the label map")
    return Listing(pairs, problems)


def pair_folders(image_dir: Path, label_dir: Path, definition: DatasetDef,
                 image_suffix: str) -> Listing:
    """Pairs `image_dir/<stem>.<jpg|jpeg|png>` with `label_dir/<stem>.png` (both folders must
    exist); `image_suffix` names the image a lone label map expects."""
    require_dir(image_dir, definition)
    require_dir(label_dir, definition)
    images = {p.stem: p for p in list_files(image_dir, IMAGE_SUFFIXES)}
    labels = {p.stem: p for p in list_files(label_dir, (".png",))}
    return match_pairs(images, labels, lambda k: label_dir / f"{k}.png",
                       lambda k: image_dir / f"{k}{image_suffix}")


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class RawItem:
    """An undecoded item: uint8 image (3, H, W), raw label array, its encoding, names for errors."""

    image: torch.Tensor
    label: np.ndarray
    encoding: str
    image_name: str
    label_name: str


class Source(Protocol):
    """Where raw items come from (the data set's own files or a Hugging Face copy)."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> RawItem: ...


class NativeSource:
    """Raw items of one split read from the data set's own files."""

    def __init__(self, definition: DatasetDef, pairs: list[Pair]) -> None:
        self.definition, self.pairs = definition, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> RawItem:
        p = self.pairs[index]
        image = read_image(p.image)
        label = self.definition.read_label(p.label)
        return RawItem(image, label, p.encoding, str(p.image), str(p.label))


def decode_item(item: RawItem, definition: DatasetDef, ignore_index: int,
                compact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 image, int64 class-id label) with the size and value checks; `compact`: a uint8
    label where the ids fit (`decode_label`)."""
    h, w = item.image.shape[-2:]
    if tuple(item.label.shape) != (h, w):
        lh, lw = item.label.shape[:2]
        raise DataError(f"image {item.image_name} is {w}x{h} but its label map {item.label_name} "
                        f"is {lw}x{lh} (WxH); they must match: re-extract the pair or delete it")
    lut = definition.luts[item.encoding]
    label = decode_label(item.label, lut, ignore_index, item.label_name, definition, item.encoding,
                         compact)
    return item.image, label


Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class SegmentationDataset(Dataset):
    """One split of a real data set: item = (normalised float32 image (3, H, W), int64 label).

    `ds[i]` draws augmentation from the ambient torch RNG; `ds[(i, seed)]` draws it from an RNG
    seeded with `seed` only, so the item is a pure function of (i, seed) in any worker or order.
    """

    def __init__(self, definition: DatasetDef, source: Source, split: str, transform: Transform,
                 ignore_index: int = 255) -> None:
        self.definition, self.source, self.split = definition, source, split
        self.transform, self.ignore_index = transform, ignore_index
        self.class_names = list(definition.class_names)
        self.palette = list(definition.palette)

    def __len__(self) -> int:
        return len(self.source)

    def _index(self, i: Any) -> int:
        i = operator.index(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for split {self.split!r} of length {n}")
        return i % n

    def load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Untransformed (uint8 image, int64 label) of item i, checked."""
        return decode_item(self.source.load(self._index(i)), self.definition, self.ignore_index)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transformed(key, self.transform, compact=False)

    def host_item(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """What a DataLoader worker makes of item `key` when the transform is staged
        (benchmark/datasets/staging.py): its `host` part on a uint8 label; the device part
        (`transform.finish`) then makes exactly `self[key]` of the batch."""
        return self._transformed(key, self.transform.host, compact=True)

    def _transformed(self, key: int | tuple[int, int], transform: Transform,
                     compact: bool) -> Any:
        if isinstance(key, tuple):
            index, seed = key
        else:
            index, seed = key, None
        image, label = decode_item(self.source.load(self._index(index)), self.definition,
                                   self.ignore_index, compact)
        if seed is None:
            return transform(image, label)
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed also queues a seed for every lazy
            # accelerator backend, formatting a stack trace each time (1 ms an item)
            torch.default_generator.manual_seed(int(seed))
            return transform(image, label)
