"""The `--dry-run` plan and the GPU-memory class of each cell, without importing torch.

Parameter counts and activation sizes come from a meta-device forward of each model (torch,
imported only then), cached on disk; with the cache filled a dry run never imports torch or
the model libraries, so it costs well under the 2.45 s `import torch` alone takes on a small
VM (perf/overhead.py). `preflight.py` measures the real step on the CPU or a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from benchmark.config import Cell

MEMORY_CLASSES = (16, 24, 40, 80)  # GB: V100-16G, 24G cards, A100-40G, A100/H100-80G


def crop_size(cell: Cell) -> tuple[int, int]:
    """Training crop (height, width) of a cell; whole-image cells fall back to data.image_size."""
    h = cell.data.crop_size or cell.data.image_size
    return h, cell.data.crop_width or h


def per_device_batch(cell: Cell) -> int:
    """Images per GPU in the cell's reference set-up (global batch / recipe GPUs)."""
    gpus = getattr(getattr(cell, "resources", None), "gpus", 1) or 1
    return max(1, cell.train.batch_size // gpus)


# ----------------------------------------------------------------------------- memory estimate


@dataclass
class MemoryEstimate:
    """Estimated training memory of one GPU, and the smallest common card class that fits."""

    gb: float
    batch: int  # images per GPU assumed
    params: dict[str, int]

    @property
    def memory_class(self) -> str:
        for size in MEMORY_CLASSES:
            if self.gb <= size:
                return f"<={size}GB"
        return f">{MEMORY_CLASSES[-1]}GB"


_ESTIMATES: dict[tuple, tuple[int, dict[str, int]]] = {}
CACHE_ENV = "PROTOSEG_CACHE"  # folder of the on-disk cache; "off" disables it


def estimate_memory(cell: Cell, batch: int | None = None) -> MemoryEstimate:
    """Weights + gradients + optimizer state + saved activations x batch, +10%, +0.5 GB context.

    The model on PyTorch's meta device (no compute, no memory) at the full crop, summing what
    autograd saves for the backward pass.

    Activations are what autograd saves in a training-mode forward at the full crop on the meta
    device, per image (the head's loss terms, a small share, are left out); bf16 AMP
    halves them. A rough class for planning; `--preflight` on the GPU measures the real peak.
    The meta-device pass (seconds for a paper-scale model, plus importing its library) is
    cached on disk (`estimate_cache_path`), keyed by the model spec, classes, crop, the source
    of methods/ and the library versions, so a repeated `--dry-run` takes no model building.
    """
    batch = batch or per_device_batch(cell)
    h, w = crop_size(cell)
    key = (cell.model, cell.data.num_classes, h, w)
    if key not in _ESTIMATES:
        disk_key = _estimate_key(cell, h, w)
        cached = _read_estimate(disk_key)
        if cached is None:
            cached = _meta_estimate(cell, h, w)
            _write_estimate(disk_key, cached)
        _ESTIMATES[key] = cached
    saved, params = _ESTIMATES[key]
    state_bytes = 16 if cell.train.optimizer == "adamw" else 12  # fp32 weight, grad, moments
    act = saved * batch * (0.5 if cell.train.amp else 1.0)
    gb = (params["learnable"] * state_bytes + act) * 1.1 / 1e9 + 0.5
    return MemoryEstimate(gb=gb, batch=batch, params=params)


def _meta_estimate(cell: Cell, h: int, w: int) -> tuple[int, dict[str, int]]:
    """(activation bytes saved per image, parameter counts) from a meta-device forward."""
    saved = 0

    def pack(t: "torch.Tensor") -> "torch.Tensor":
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    import torch

    from methods import build_model, count_params

    with torch.device("meta"):
        model = build_model(cell.model, cell.data.num_classes, cell.data.ignore_index).train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.empty(2, 3, h, w))  # 2: BatchNorm refuses 1x1 maps of one image
    return saved // 2, count_params(model)


def estimate_cache_path() -> Path | None:
    """`$PROTOSEG_CACHE/memory_estimates.json` (default ~/.cache/protoseg-bench/...), or None
    when PROTOSEG_CACHE=off."""
    folder = os.environ.get(CACHE_ENV, "")
    if folder.lower() in ("off", "0", "none"):
        return None
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = str(Path(base) / "protoseg-bench")
    return Path(folder) / "memory_estimates.json"


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """The source of methods/ and the versions of the libraries that build the models."""
    import importlib.metadata

    h = hashlib.sha1()
    root = Path(__file__).resolve().parents[1] / "methods"
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    for lib in ("torch", "torchvision", "timm", "transformers"):
        try:
            h.update(f"{lib}={importlib.metadata.version(lib)}".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{lib}=none".encode())
    return h.hexdigest()


def _estimate_key(cell: Cell, h: int, w: int) -> str:
    spec = {"model": dataclasses.asdict(cell.model), "classes": cell.data.num_classes,
            "ignore": cell.data.ignore_index, "crop": [h, w], "code": _code_fingerprint()}
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _read_estimate(key: str) -> tuple[int, dict[str, int]] | None:
    path = estimate_cache_path()
    entry = _read_cache(path).get(key) if path is not None else None
    if not isinstance(entry, dict) or "saved" not in entry or "params" not in entry:
        return None
    return int(entry["saved"]), {k: int(v) for k, v in entry["params"].items()}


def _write_estimate(key: str, value: tuple[int, dict[str, int]]) -> None:
    """Add one entry (atomic rename; a cache that cannot be written is skipped silently)."""
    path = estimate_cache_path()
    if path is None:
        return
    from benchmark.store import atomic_write

    entries = _read_cache(path)
    entries[key] = {"saved": value[0], "params": value[1]}
    try:
        atomic_write(path, json.dumps(entries, sort_keys=True))
    except OSError:
        pass


def _record_state(path: Path) -> str:
    """done / failed / ... from the record at `path`, or '-' where there is none."""
    from benchmark.store import RecordError, read_record

    if not path.exists():
        return "-"
    try:
        return read_record(path).status
    except (OSError, RecordError):
        return "damaged (rerun)"  # the one-line warning names the file and the problem


def describe_plan(grid: object, runs: list, recipes: dict | None = None) -> str:
    """The `--dry-run` text: per cell its key, seeds and which records exist, model, parameter
    count beside the paper's, estimated GPU memory class; then each recipe in full."""
    from benchmark.checkpoints.weights import weights_column  # torch only for existing files

    lines = [f"grid {grid.name}: {grid.description}"]
    by_cell: dict[str, list] = {}
    for r in runs:
        by_cell.setdefault(r.cell.key, []).append(r)
    used: dict[str, object] = {}
    for key, cell_runs in by_cell.items():
        c = cell_runs[0].cell
        done = [r.seed for r in cell_runs if r.done]
        seeds = ", ".join(f"seed{r.seed} {_record_state(r.path)}" for r in cell_runs)
        m = c.model
        try:
            est = estimate_memory(c)
            params = (f"{est.params['learnable'] / 1e6:.2f}M learnable, "
                      f"{est.params['total'] / 1e6:.2f}M all")
            memory = f"~{est.gb:.1f} GB/GPU at {est.batch} img/GPU ({est.memory_class})"
        except Exception as err:  # noqa: BLE001 - an estimate must not stop the plan
            params, memory = "?", f"no estimate ({type(err).__name__})"
        paper = f" (paper {c.paper_params_m:g}M)" if c.paper_params_m is not None else ""
        recipe = (recipes or {}).get(c.train.recipe)
        if recipe is not None:
            used[recipe.name] = recipe
            schedule = f"recipe {recipe.name}"
        else:
            t = c.train
            schedule = f"{t.iters} it x {t.batch_size} img, {t.optimizer} lr {t.lr:g}"
        h, w = crop_size(c)
        lines += [
            f"  {c.row:<22} {c.column:<12} {key}  seeds {len(cell_runs)} (done {len(done)})",
            f"      {c.data.name} ({c.data.num_classes} classes) | {m.backbone}+{m.decoder}"
            f"+{m.head.name}" + (f"+aux {m.aux_weight:g}" if m.aux_weight else "")
            + f" | params {params}{paper} | {schedule}, crop {h}x{w}",
            f"      memory {memory} | records: {seeds}",
            f"      weights {weights_column(c)}",
        ]
    for recipe in used.values():
        lines += [f"recipe {recipe.describe()}",
                  f"    for: {recipe.summary}",
                  f"    augmentation: {recipe.augmentation}",
                  f"    evaluation: {recipe.eval_protocol}",
                  f"    source: {recipe.source}"]
        if recipe.deviations:
            lines.append(f"    deviations: {recipe.deviations}")
    return "\n".join(lines)


def describe_checkpoints(grid: object, cells: list, checkpoint: str | None, lookup) -> str:
    """The `--dry-run` text of a grid evaluated from checkpoints (`zoo`, `--checkpoint`): no
    seeds and no training recipe; per cell its published mIoU and whether its file is there
    (`lookup`: cell -> the published entry or None, experiments/zoo.py `published_for`)."""
    from benchmark.checkpoints.files import default_folder, find_file, names_for

    folder = checkpoint or default_folder()
    cells = list(cells)
    lines = [f"grid {grid.name}: {grid.description}",
             f"  evaluated from checkpoints in {folder} (no training, no seeds)"]
    found = 0
    for c in cells:
        published = lookup(c)
        path = find_file(folder, names_for(c, published))
        found += path is not None
        miou = f"published mIoU {c.paper_miou:.2f}" if c.paper_miou is not None else \
            "no published mIoU"
        where = (f"present: {path}" if path is not None else
                 f"missing (looked for {', '.join(names_for(c, published))}"
                 + (f"; download from {published.origin})" if published is not None else ")"))
        lines.append(f"  {c.row:<66} {c.column:<11} {miou}")
        lines.append(f"      {where}")
    lines.append(f"  {found} of {len(cells)} checkpoint files present")
    return "\n".join(lines)
