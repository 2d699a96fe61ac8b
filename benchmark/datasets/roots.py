"""Where a data set lives: `data.root`, else `$PROTOSEG_DATA`, else the default data folders.

Each of these may be the data set's own folder or a parent holding it under its default
subfolder (`camvid/`, `ADEChallengeData2016/`, `cityscapes/`, `coco_stuff10k/`; Hugging Face
copies `<name>_hf/`). `run_all.py --data-root DIR` sets `$PROTOSEG_DATA`, so the path never
enters a cell's key and jobs started from the command inherit it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from benchmark.datasets.base import DataError, DatasetDef

ENV_VAR = "PROTOSEG_DATA"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_PARENTS: tuple[Path, ...] = (REPO / "data", REPO.parent / "shared" / "data")


def data_parents() -> list[Path]:
    """Folders searched when `data.root` is empty: `$PROTOSEG_DATA` (os.pathsep-separated) or
    the defaults `<repo>/data` and `<repo>/../shared/data`."""
    env = os.environ.get(ENV_VAR, "")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return list(DEFAULT_PARENTS)


def missing_markers(folder: Path, markers: tuple[str, ...]) -> list[str]:
    """The marker paths that `folder` lacks, folders written with a trailing slash."""
    return [m if "." in Path(m).name else f"{m}/" for m in markers if not (folder / m).exists()]


def find_root(definition: DatasetDef, root: str = "", folder: str | None = None,
              lacks: Callable[[Path], list[str]] | None = None, layout: str | None = None) -> Path:
    """The folder holding `definition`'s data; DataError (missing root / wrong layout) otherwise.

    `lacks(folder)` lists what a candidate folder misses (default: the definition's markers).
    """
    folder = folder or definition.folder
    lacks = lacks or (lambda cand: missing_markers(cand, definition.markers))
    layout = layout or definition.layout
    bases = [Path(root).expanduser()] if root else data_parents()
    for base in bases:
        for cand in (base, base / folder):
            if cand.is_dir() and not lacks(cand):
                return cand
    how = (f"point --data-root (check command: --root) at the folder holding {folder}/ "
           f"or at {folder}/ itself, or set {ENV_VAR}")
    if root and not bases[0].exists():
        raise DataError(f"data root {bases[0]} does not exist; {how}")
    if root and not bases[0].is_dir():
        raise DataError(f"data root {bases[0]} is a file, not a folder; {how}")
    existing = [c for b in bases for c in (b / folder, b) if c.is_dir()]
    if root or (existing and existing[0].name == folder):
        cand = existing[0]
        missing = ", ".join(lacks(cand))
        raise DataError(f"{cand} does not look like {definition.title}: it lacks {missing}; "
                        f"expected {layout}; {how}")
    looked = ", ".join(str(b) for b in bases)
    raise DataError(f"{definition.title} not found: no {folder}/ in {looked}; {how}")
