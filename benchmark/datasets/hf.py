"""Hugging Face copies of a data set: read one saved with `save_to_disk` or as parquet files, and
convert any supported on-disk layout to that format.

The format: one row per image with columns `image` and `annotation` (datasets.Image), the
annotation in the data set's own raw label encoding (ADE20K: 0 = other, 1-150, as in the
hub's `scene_parse_150`; Cityscapes: label ids; CamVid: 0-11; COCO-Stuff-10K: 0-182), so the
same label mapping applies as for the on-disk layout. Splits: `train`, `val` (also read as
`validation`), `test`. Parquet files (up to two folders deep) belong to the split named by a
folder or their file-name prefix (`data/train-00000-of-00001.parquet`,
`scene_parsing/validation/0000.parquet`) and are cached by `datasets` in `$HF_DATASETS_CACHE`
(the user's own).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from benchmark.datasets.base import (DataError, DatasetDef, RawItem, decode_label_image,
                                     decode_rgb, first_line)
from benchmark.datasets.roots import find_root

SPLIT_ALIASES = {"train": ("train", "training"), "val": ("val", "validation"), "test": ("test",)}
COLUMNS = ("image", "annotation")


def hf_folder(definition: DatasetDef) -> str:
    """Default subfolder of a Hugging Face copy below a data parent, e.g. `camvid_hf`."""
    return f"{definition.name}_hf"


def _parquet_files(root: Path) -> list[Path]:
    """Parquet files up to two folders deep (hub conversions: <config>/<split>/0000.parquet)."""
    return sorted(p for pattern in ("*.parquet", "*/*.parquet", "*/*/*.parquet")
                  for p in root.glob(pattern))


def _lacks_hf(folder: Path) -> list[str]:
    if (folder / "dataset_dict.json").is_file() or _parquet_files(folder):
        return []
    return ["dataset_dict.json (save_to_disk) or *.parquet files"]


def find_hf_root(definition: DatasetDef, root: str = "") -> Path:
    """The folder of `definition`'s Hugging Face copy (`data.root` or `<parent>/<name>_hf`)."""
    layout = ("a folder written by DatasetDict.save_to_disk, or parquet files "
              "(<split>-*.parquet, <split>/*.parquet, data/<split>-*.parquet) with columns "
              "image and annotation")
    return find_root(definition, root, folder=hf_folder(definition), lacks=_lacks_hf,
                     layout=layout)


def _split_of(path: Path, root: Path) -> str | None:
    """Our split name for a parquet file, from a folder or a file-name prefix."""
    rel = path.relative_to(root)
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            if alias in rel.parts[:-1] or any(rel.name.startswith(alias + sep) for sep in "-_."):
                return split
    return None


def available_splits(root: Path) -> dict[str, str]:
    """Our split name -> the copy's split name (save_to_disk) or '' (parquet)."""
    if (root / "dataset_dict.json").is_file():
        names = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        return {ours: theirs for ours, aliases in SPLIT_ALIASES.items()
                for theirs in aliases if theirs in names}
    return {s: "" for s in dict.fromkeys(_split_of(p, root) for p in _parquet_files(root)) if s}


def open_split(definition: DatasetDef, root: Path, split: str) -> Any:
    """The `datasets.Dataset` of one split with only the image and annotation columns."""
    import datasets

    splits = available_splits(root)
    if split not in splits:
        raise DataError(f"the Hugging Face copy {root} has no split {split!r} (it has "
                        f"{', '.join(splits) or 'none'}); set data.val_split or convert that split")
    try:
        if splits[split]:
            ds = datasets.load_from_disk(str(root))[splits[split]]
        else:
            files = [str(p) for p in _parquet_files(root) if _split_of(p, root) == split]
            ds = datasets.load_dataset("parquet", data_files={split: files}, split=split,
                                       cache_dir=os.environ.get("HF_DATASETS_CACHE"))
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"cannot open split {split!r} of the Hugging Face copy {root} "
                        f"({first_line(err)}); re-create it with `python -m benchmark.datasets "
                        f"convert {definition.name}`") from None
    missing = [c for c in COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(f"split {split!r} of {root} lacks column(s) {', '.join(missing)} (it has "
                        f"{', '.join(ds.column_names)}); expected image and annotation")
    for column in COLUMNS:
        if not isinstance(ds.features[column], datasets.Image):
            raise DataError(f"column {column!r} of {root} [{split}] is {ds.features[column]}, "
                            f"not datasets.Image; cast it with ds.cast_column({column!r}, Image())")
    return ds.select_columns(list(COLUMNS))


def _bytes(cell: dict[str, Any] | None) -> bytes | None:
    """Encoded bytes of an undecoded datasets.Image cell (embedded, or read from its path)."""
    if cell is None:
        return None
    if cell.get("bytes") is not None:
        return cell["bytes"]
    return Path(cell["path"]).read_bytes() if cell.get("path") else None


class HFSource:
    """Raw items of one split of a Hugging Face copy. Images are decoded from their stored bytes
    with the same decoders as the on-disk files, so both formats give identical items."""

    def __init__(self, ds: Any, where: str) -> None:
        import datasets

        self.ds = ds.cast_column("image", datasets.Image(decode=False)).cast_column(
            "annotation", datasets.Image(decode=False))
        self.where = where

    def __len__(self) -> int:
        return len(self.ds)

    def load(self, index: int) -> RawItem:
        name = f"{self.where} row {index}"
        row = self.ds[index]
        try:
            image, label = _bytes(row["image"]), _bytes(row["annotation"])
        except OSError as err:
            raise DataError(f"cannot read {name} ({first_line(err)}); its file is missing: "
                            f"re-create the copy") from None
        if image is None or label is None:
            raise DataError(f"{name} has no {'image' if image is None else 'annotation'}; "
                            f"use a labelled split (e.g. not scene_parse_150's test split)")
        try:
            img = decode_rgb(io.BytesIO(image))
        except (OSError, ValueError, SyntaxError) as err:
            raise DataError(f"cannot decode the image of {name} ({first_line(err)}); the stored "
                            f"bytes are corrupt: re-create the copy") from None
        try:
            arr = decode_label_image(io.BytesIO(label))
        except (OSError, ValueError, SyntaxError) as err:
            raise DataError(f"cannot decode the annotation of {name} ({first_line(err)}); the "
                            f"stored bytes are corrupt: re-create the copy") from None
        if arr.ndim != 2:
            raise DataError(f"annotation of {name} has {arr.shape[-1]} channels; expected a "
                            f"single-channel map of class ids")
        return RawItem(img, arr, "raw", f"{name} (image)", f"{name} (annotation)")


# --------------------------------------------------------------------------- conversion


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def raw_label_png(definition: DatasetDef, label: Path, encoding: str) -> bytes:
    """PNG bytes of a label map in the data set's raw encoding (copied when it already is)."""
    if encoding == "raw" and label.suffix.lower() == ".png":
        return label.read_bytes()
    arr = definition.read_label(label)
    if encoding != "raw":
        arr = definition.to_raw[encoding][arr.astype(np.int64)]
    if arr.min() < 0 or arr.max() > 255:
        raise DataError(f"label map {label} holds values outside 0-255; cannot store it as PNG")
    return _png(arr)


def _rows(pairs: list, definition: DatasetDef) -> Iterator[dict[str, Any]]:
    for p in pairs:
        yield {"image": {"bytes": p.image.read_bytes(), "path": p.image.name},
               "annotation": {"bytes": raw_label_png(definition, p.label, p.encoding),
                              "path": p.label.with_suffix(".png").name}}


def convert(definition: DatasetDef, src: Path, out: Path, fmt: str = "disk",
            splits: tuple[str, ...] | None = None, limit: int = 0) -> dict[str, int]:
    """Write `definition`'s splits found under `src` to `out` (save_to_disk or parquet files);
    returns rows per split. Nothing is left behind on failure (written to a sibling, renamed)."""
    import datasets

    if fmt not in ("disk", "parquet"):
        raise DataError(f"unknown format {fmt!r}; choose disk (save_to_disk) or parquet")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"output {out} already exists and is not empty; choose a new folder "
                        f"or delete it")
    splits = splits or definition.splits
    listings = {}
    for split in splits:
        definition.check_split(split)
        listing = definition.list_split(src, split)
        if listing.problems:
            raise DataError(f"{listing.problems[0]} (run `python -m benchmark.datasets check "
                            f"{definition.name} --root {src}` for the full report)")
        listings[split] = listing.pairs[:limit] if limit > 0 else listing.pairs
    features = datasets.Features({c: datasets.Image() for c in COLUMNS})
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.cache-") as cache:
            parts = {s: datasets.Dataset.from_generator(
                _rows, features=features, cache_dir=cache,
                gen_kwargs={"pairs": pairs, "definition": definition})
                for s, pairs in listings.items()}
            if fmt == "disk":
                datasets.DatasetDict(parts).save_to_disk(str(staging))
            else:
                for s, ds in parts.items():
                    ds.to_parquet(str(staging / "data" / f"{s}-00000-of-00001.parquet"))
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {s: len(p) for s, p in listings.items()}
