"""Checks before any compute: what would otherwise fail only after hours of training.

Before a run trains (`run_all.py` before its first run or job; a cluster job again before it
builds the model): the folders its record, checkpoints and lock go to are writable and hold
enough free space for a record and a checkpoint of this model; its pretrained file exists; every
split it reads passes the data set's quick layout check, and the first pairs of the evaluation
split (read only after training) decode. Each problem is one line naming the path and the fix.
A record write that fails anyway keeps the computed result (runs.py, `save_record`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from benchmark.config import Cell
from benchmark.disk import existing_ancestor, human_size
from benchmark.launch.runs import Run
from benchmark.store import ResultsLayout

EVAL_PAIRS = 2  # at least these evaluation pairs are decoded before training
FULL_DECODE_PAIRS = 256  # evaluation splits up to this size are decoded in full (CamVid's 233)
TAIL_BYTES = 1024  # where a file's end marker is looked for (JPEGs may carry a few bytes after)
FILE_ENDS = ((b"\x89PNG", b"IEND\xaeB`\x82", "PNG IEND"), (b"\xff\xd8", b"\xff\xd9", "JPEG"))
RECORD_BASE_BYTES = 256 * 1024  # a record without its history and confusion matrix, generous
FIX_FOLDER = "make it writable or point --results at another folder"


class CheckError(ValueError):
    """A problem found before any compute; the message is one line naming the path and fix."""


def record_bytes(cell: Cell) -> int:
    """Upper estimate of one record: metadata, the logged history, the confusion matrix."""
    logged = cell.train.iters // max(1, cell.train.log_every) + 2
    return RECORD_BASE_BYTES + 2048 * logged + 16 * cell.data.num_classes ** 2


def checkpoint_bytes(cell: Cell) -> int:
    """One training checkpoint: fp32 weights and buffers, plus the optimizer state (SGD
    momentum: one copy of the learnable weights; AdamW: two)."""
    try:
        from benchmark.launch.memory import estimate_memory  # meta-device count, cached on disk

        params = estimate_memory(cell, batch=1).params
    except Exception:  # noqa: BLE001 - a model that cannot be built fails its run anyway
        return 0
    slots = 2 if cell.train.optimizer == "adamw" else int(cell.train.momentum > 0)
    return 4 * params["total"] + 4 * slots * params["learnable"]


def folder_problem(folder: Path, need: int, what: str) -> str | None:
    """Whether `folder` (or the ancestor it would be made in) takes a write of `need` bytes."""
    base = existing_ancestor(folder)
    if not base.is_dir():
        return f"{base} is a file, not a folder, so {what} cannot go to {folder}: {FIX_FOLDER}"
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return f"cannot write in {base} ({err.strerror or err}), needed for {what}: {FIX_FOLDER}"
    free = shutil.disk_usage(base).free
    if free < need:
        return (f"not enough space in {base}: {human_size(free)} free, {what} needs about "
                f"{human_size(need)}; free some space or point --results at another disk")
    return None


def pretrained_problem(cell: Cell) -> str | None:
    """The pretrained weights a run loads must exist before it starts."""
    path = cell.model.pretrained
    if path and path != "none" and not Path(path).expanduser().exists():  # none: from scratch
        return (f"pretrained weights {path} do not exist (model.pretrained of {cell.row}); "
                f"download them there or --set model.pretrained=PATH")
    return None


def data_problem(spec: Any) -> str | None:
    """The quick layout check of every split a run reads, then every pair of the evaluation
    split (read only after training): decoded in full where the split is small, else its
    headers, sizes and file ends read (eval_split_problem), so a bad pair stops nothing
    trained."""
    from benchmark.datasets import REAL_DATASETS, DataError, check_layout

    try:
        check_layout(spec)
        if spec.name in REAL_DATASETS:
            from benchmark.datasets.check import open_checked

            definition = REAL_DATASETS[spec.name]
            check_eval_split(open_checked(spec, definition, spec.val_split), definition,
                             spec.ignore_index)
    except DataError as err:
        return str(err).splitlines()[0]
    return None


def check_eval_split(source: Any, definition: Any, ignore_index: int) -> None:
    """DataError on the first bad pair of an evaluation split. Up to FULL_DECODE_PAIRS pairs
    are decoded (sizes, label values); a larger split of files on disk is read by its headers
    (both files open as images of the same size) and file ends (a PNG's IEND chunk, a JPEG's
    end marker: a cut-off download), at a few milliseconds per pair; a larger Hugging Face copy
    (bytes in a table) has a spread sample decoded."""
    from benchmark.datasets.base import DataError, NativeSource, decode_item
    from benchmark.datasets.check import sample_indices

    n = len(source)
    if n <= FULL_DECODE_PAIRS or not isinstance(source, NativeSource):
        for i in sample_indices(n, max(FULL_DECODE_PAIRS, EVAL_PAIRS)):
            decode_item(source.load(i), definition, ignore_index)
        return
    for pair in source.pairs:
        image_size = _header_size(pair.image, "image")
        label_size = _header_size(pair.label, "label map")
        if image_size != label_size:
            raise DataError(f"image {pair.image} is {image_size[0]}x{image_size[1]} but its "
                            f"label map {pair.label} is {label_size[0]}x{label_size[1]} (WxH); "
                            f"they must match: re-extract the pair or delete it")


def _header_size(path: Path, what: str) -> tuple[int, int]:
    """(width, height) from an image file's header, after checking that the file ends as its
    format says; DataError naming the file otherwise."""
    from PIL import Image

    from benchmark.datasets.base import DataError

    fix = "re-download / re-extract it or delete the pair"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
        for magic, end, name in FILE_ENDS:
            if head.startswith(magic) and end not in tail:
                raise DataError(f"{what} {path} is cut off (no {name} end); {fix}")
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot read {what} {path} ({str(err).splitlines()[0]}); the file is "
                        f"corrupt or not an image: {fix}") from None


def first_problem(runs: Iterable[Run], layout: ResultsLayout, tables: bool = True) -> str | None:
    """The first problem of any run about to be trained under the results folder, or of the
    tables folder when `tables`; None when all is well."""
    needs: dict[Path, tuple[int, str]] = {}  # folder checked -> (bytes needed, what goes there)
    if tables:
        needs[existing_ancestor(layout.tables())] = (1 << 20, "the tables")
    checked: set[Any] = set()
    for run in runs:
        cell, seed = run.cell, run.seed
        for problem in (pretrained_problem(cell),
                        None if cell.data in checked else data_problem(cell.data)):
            if problem:
                return problem
        checked.add(cell.data)
        record = layout.record(cell.grid, cell.key, seed).parent
        ckpt = layout.checkpoints(cell.grid, cell.key, seed)
        lock = layout.lock(cell.grid, cell.key, seed).parent
        for folder, need, what in (
                (record, record_bytes(cell), "a record"),
                (ckpt, record_bytes(cell) + checkpoint_bytes(cell),
                 f"a record and a checkpoint of {cell.row}"),
                (lock, 4096, "the run's lock file")):
            base = existing_ancestor(folder)
            if base not in needs or needs[base][0] < need:
                needs[base] = (need, what)
    for folder, (need, what) in needs.items():
        problem = folder_problem(folder, need, what)
        if problem:
            return problem
    return None


def check_run(run: Run) -> None:
    """The checks of one run inside its job, before the model is built; CheckError."""
    problem = first_problem([run], run.layout, tables=False)
    if problem:
        raise CheckError(problem)
