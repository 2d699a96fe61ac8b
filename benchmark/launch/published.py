"""Evaluate published whole-model checkpoints instead of training (`--checkpoint`, `--grid zoo`):
another kind of run beside training, so it lives in launch/; checkpoints/ only reads the files.

Each cell's model is built, filled strictly from its checkpoint (benchmark/checkpoints/whole.py)
and evaluated on the cell's split with the cell's protocol (whole image or sliding window); the
record has kind `published-checkpoint`, lives in its own file (`ResultsLayout.published_record`,
never a trained run's `seed<N>.json`) and names the file, its SHA-256, its source and the
published mIoU. A cell whose file is absent is a `missing` row naming the download, not an
error; the table "published vs this suite" gives the difference.
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from benchmark.checkpoints.coverage import CheckpointError
from benchmark.checkpoints.files import default_folder, names_for
from benchmark.checkpoints.whole import find_checkpoint, load_checkpoint
from benchmark.config import Cell
from benchmark.disk import DiskFull
from benchmark.provenance import provenance
from benchmark.records import Metrics, Params, Timings
from benchmark.store import Record, ResultsLayout, write_record

Lookup = Callable[[Cell], Any]  # cell -> Published-like (config, patterns, origin, miou, ...)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate_checkpoint(cell: Cell, path: str | Path, names: tuple[str, ...] = (),
                        progress: bool = False) -> dict[str, Any]:
    """Build the cell's model, load the checkpoint strictly, evaluate the cell's split; the
    record's fields (metrics, params, timings, confusion) and the load report."""
    from benchmark.datasets import build_dataset, dataset_info
    from benchmark.train.evaluate import metrics_from_confusion, predict_confusion
    from methods import build_model, count_params

    info = dataset_info(cell.data)
    model = build_model(cell.model, info.num_classes, cell.data.ignore_index)
    report = load_checkpoint(model, path, names)
    device = _device()
    val_set = build_dataset(cell.data, cell.data.val_split)
    slide = cell.eval.mode == "slide"
    start = time.perf_counter()
    cm = predict_confusion(
        model.to(device), val_set, info.num_classes, cell.data.ignore_index,
        cell.eval.batch_size, device, progress=progress,
        window=(cell.eval.window_h, cell.eval.window_w) if slide else None,
        stride=(cell.eval.stride_h, cell.eval.stride_w) if slide else None).cpu()
    eval_s = time.perf_counter() - start
    return {"report": report,
            "metrics": Metrics.from_dict(metrics_from_confusion(cm, info.class_names)),
            "params": Params.from_dict(count_params(model)), "confusion": cm.tolist(),
            "timings": Timings(train_s=0.0, eval_s=eval_s,
                               eval_img_per_s=len(val_set) / eval_s if eval_s else 0.0)}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def published_record(cell: Cell, result: dict[str, Any], published: Any,
                     started: str) -> Record:
    """The record of one evaluated checkpoint (kind `published-checkpoint`)."""
    report = result["report"]
    checkpoint = {"file": report.path, "sha256": report.sha256, "format": report.format,
                  "source": getattr(published, "origin", report.format),
                  "published_miou": getattr(published, "miou", cell.paper_miou),
                  "protocol": getattr(published, "protocol", cell.eval.mode),
                  "tensors_loaded": report.loaded, "tensors_expected": report.expected}
    return Record(status="done", kind="published-checkpoint", grid=cell.grid, cell_key=cell.key,
                  seed=0, cell=cell.to_dict(), metrics=result["metrics"],
                  params=result["params"], timings=result["timings"],
                  confusion=result["confusion"], provenance=provenance(), started=started,
                  finished=_now(), checkpoint=checkpoint)


def _row(cell: Cell, published: Any, miou: float | None, status: str) -> dict[str, Any]:
    ref = getattr(published, "miou", cell.paper_miou)
    diff = miou - ref if miou is not None and ref is not None else None
    return {"checkpoint": cell.row, "data": cell.column or cell.data.name, "published": ref,
            "suite": miou, "diff": diff, "status": status}


def _missing(published: Any, names: tuple[str, ...], folder: str | Path) -> str:
    """The status of a cell without its file: what to download and where to put it."""
    if published is None:
        return f"missing: no {' or '.join(names)} in {folder}"
    return (f"missing: download {published.origin} ({published.old_name}_*.pth) into "
            f"{folder}")


def evaluate_cells(cells: Iterable[Cell], folder: str | Path, layout: ResultsLayout,
                   lookup: Lookup, progress: bool = False,
                   save: Callable[[Path, Record], Any] = write_record) -> tuple[list[dict], int]:
    """Evaluate every cell whose checkpoint is in `folder` (or is `folder`); write its record
    with `save` (the CLI passes one that keeps an unwritable record elsewhere). Returns the
    table rows and the number of failed evaluations or record writes."""
    rows, failures = [], 0
    for cell in cells:
        published = lookup(cell)
        names = names_for(cell, published)
        try:
            file = find_checkpoint(folder, names)
        except CheckpointError:
            rows.append(_row(cell, published, None, _missing(published, names, folder)))
            continue
        started = _now()
        try:
            result = evaluate_checkpoint(cell, file, names, progress)
        except Exception as err:  # noqa: BLE001 - one line per cell; the grid goes on
            failures += 1
            message = f"{type(err).__name__}: {err}".splitlines()[0]
            print(f"error: {cell.row}: {message}", file=sys.stderr)
            rows.append(_row(cell, published, None, f"failed: {message}"))
            continue
        record = published_record(cell, result, published, started)
        try:
            save(layout.published_record(cell.grid, cell.key), record)
        except DiskFull:  # kept by `save`; no further evaluation on a full disk
            raise
        except OSError as err:  # the evaluation is kept by `save`; its message says where
            failures += 1
            print(f"error: {cell.row}: {err}", file=sys.stderr)
            rows.append(_row(cell, published, record.miou, "evaluated, record not written"))
            continue
        rows.append(_row(cell, published, record.miou, f"evaluated {Path(file).name} "
                                                       f"(sha256 {result['report'].sha256[:12]})"))
    return rows, failures


def run_published(grids: list[tuple[Any, list[Cell]]], folder: str | Path | None,
                  layout: ResultsLayout, lookup: Lookup, progress: bool = False,
                  save: Callable[[Path, Record], Any] = write_record) -> int:
    """The `--checkpoint` / zoo mode: evaluate and write a record per present checkpoint, one
    line per cell (evaluated, missing with the download, or failed). The caller regenerates the
    tables from the records. Exit code 0 when every present checkpoint was evaluated."""
    folder = folder or default_folder()
    layout = layout if isinstance(layout, ResultsLayout) else ResultsLayout(layout)
    failures = 0
    for grid, cells in grids:
        rows, failed = evaluate_cells(cells, folder, layout, lookup, progress, save)
        failures += failed
        for r in rows:
            print(f"{grid.name}: {r['checkpoint']}: {r['status']}")
    if failures:
        print(f"error: {failures} checkpoint(s) failed to evaluate", file=sys.stderr)
    return 1 if failures else 0
