"""No accidental random init: which cells need backbone weights, and whether they have them.

A cell needs ImageNet weights when it follows a paper recipe (`train.recipe`, experiments/
recipes.py): every baseline of the paper starts from them, as MMSegmentation's configs do.
`model.pretrained` then names a file or a folder of checkpoints, or `none` to train from random
weights on purpose. Smoke and CPU grids (no recipe) need nothing. Torch-free unless a weights
file exists and the dry run's column counts its tensors.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable

from benchmark.checkpoints.expected import NONE, describe, expected_checkpoint, resolve, sha256_of
from benchmark.config import Cell

HOW = "pass --set model.pretrained=FILE_OR_DIR (a folder of checkpoints serves every backbone)"


def needs_weights(cell: Cell) -> bool:
    """True for a cell that trains with a paper recipe (all of them start from ImageNet)."""
    return bool(cell.train.recipe)


def _weights_file(cell: Cell) -> tuple[Path | None, str]:
    """(file, '') when the cell's weights exist, else (None, what is wrong); (None, '') when the
    cell asks for none."""
    path = cell.model.pretrained
    if path == NONE or (not path and not needs_weights(cell)):
        return None, ""
    wanted = expected_checkpoint(cell.model.backbone)
    if not path:
        return None, f"no backbone weights; expected {describe(wanted)}"
    try:
        return resolve(Path(path).expanduser(), wanted), ""
    except FileNotFoundError as err:
        return None, f"no checkpoint at {err.args[0]}; expected {describe(wanted)}"


def missing_weights(cells: Iterable[Cell]) -> list[str]:
    """One line per backbone that would train from random weights without being asked to:
    the backbone, the file it expects and where that comes from, and how to pass it. (A
    `model.pretrained` path that does not exist at all is benchmark/launch/checks.py's line.)"""
    lines: dict[str, str] = {}
    for cell in cells:
        path = cell.model.pretrained
        if path and path != NONE and not Path(path).expanduser().exists():
            continue
        file, problem = _weights_file(cell)
        if problem and cell.model.backbone not in lines:
            lines[cell.model.backbone] = (f"{cell.model.backbone}: {problem}; {HOW}, or "
                                          f"--set model.pretrained={NONE} to train from scratch")
    return list(lines.values())


def weights_column(cell: Cell) -> str:
    """The dry run's weights entry: file, SHA-256 prefix and tensors loaded / expected when the
    file exists; 'MISSING ...' when a paper cell has none; what was asked for otherwise."""
    if cell.model.pretrained == NONE:
        return "none (random init, asked for)"
    if cell.grid == "zoo":
        return "a published whole-model checkpoint (evaluated, not trained)"
    file, problem = _weights_file(cell)
    if problem:
        return f"MISSING: {problem}"
    if file is None:
        return "random init (no recipe needs weights)"
    return _describe_file(cell.model.backbone, str(file), file.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _describe_file(backbone: str, file: str, mtime: int) -> str:
    """Load the file into the backbone (torch, only here) and count what it filled."""
    from benchmark.checkpoints.coverage import CheckpointError
    from benchmark.checkpoints.pretrained import load_pretrained
    from methods.backbones import build_backbone

    head = f"{Path(file).name} sha256 {sha256_of(file)[:12]}"
    try:
        report = load_pretrained(build_backbone(backbone), file)
    except CheckpointError as err:
        return f"{head} ERROR: {err}"
    return f"{head}, {report.loaded}/{report.expected} tensors ({report.format})"
