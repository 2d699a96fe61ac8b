"""Where a cell's published checkpoint file is, without torch (the dry run lists them).

A folder is searched for each cell's file by name (`names_for`: the published file's globs, or
the cell's key / row); a path to a file is that file. `benchmark/checkpoints/whole.py` loads it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from benchmark.config import Cell

DEFAULT_DIR_ENV = "PROTOSEG_CHECKPOINTS"  # folder of published checkpoints; default ./checkpoints


def default_folder() -> str:
    return os.environ.get(DEFAULT_DIR_ENV, "checkpoints")


def names_for(cell: Cell, published: Any) -> tuple[str, ...]:
    """File-name globs of a cell's checkpoint inside a folder."""
    if published is not None:
        return tuple(published.patterns)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", cell.row).strip("_")
    return (f"{cell.key}*.pth", f"{slug}*.pth")


def find_file(path: str | Path, names: tuple[str, ...] = ()) -> Path | None:
    """`path` itself when a file; in a folder, the first file (sorted) matching one of `names`
    in order; None when there is none."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for pattern in names:
            found = sorted(p for p in path.glob(pattern) if p.is_file())
            if found:
                return found[0]
    return None
