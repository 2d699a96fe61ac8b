"""Each cell's training memory per GPU and its card class, estimated without running it.

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
from benchmark.store import atomic_write

MEMORY_CLASSES = (16, 24, 40, 80)  # GB: V100-16G, 24G cards, A100-40G, A100/H100-80G


def crop_size(cell: Cell) -> tuple[int, int]:
    """Training crop (height, width) of a cell; whole-image cells fall back to data.image_size."""
    h = cell.data.crop_size or cell.data.image_size
    return h, cell.data.crop_width or h


def recipe_gpus(cell: Cell) -> int:
    """The GPUs the cell's recipe trains on (1 for a CPU cell or one without resources)."""
    return getattr(getattr(cell, "resources", None), "gpus", 1) or 1


def per_device_batch(cell: Cell, gpus: int | None = None) -> int:
    """Images per GPU: the global batch over `gpus`, by default the recipe's."""
    return max(1, cell.train.batch_size // (gpus or recipe_gpus(cell)))


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


def estimate_memory(cell: Cell, batch: int | None = None,
                    gpus: int | None = None) -> MemoryEstimate:
    """Weights + gradients + optimizer state + saved activations x batch (default: the images
    per GPU on `gpus`, else the recipe's GPUs), +10%, +0.5 GB context; with several GPUs also
    DDP's gradient buckets, a second copy of the gradients.

    The model on PyTorch's meta device (no compute, no memory) at the full crop, summing what
    autograd saves for the backward pass.

    Activations are what autograd saves in a training-mode forward at the full crop on the meta
    device, per image (the head's loss terms, a small share, are left out); bf16 AMP
    halves them. A rough class for planning; `--preflight` on the GPU measures the real peak.
    The meta-device pass (seconds for a paper-scale model, plus importing its library) is
    cached on disk (`estimate_cache_path`), keyed by the model spec, classes, crop, the source
    of methods/ and the library versions, so a repeated `--dry-run` takes no model building.
    """
    gpus = gpus or recipe_gpus(cell)
    batch = batch or per_device_batch(cell, gpus)
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
    if gpus > 1:
        state_bytes += 4  # DDP all-reduces gradients through buckets of their own
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

    entries = _read_cache(path)
    entries[key] = {"saved": value[0], "params": value[1]}
    try:
        atomic_write(path, json.dumps(entries, sort_keys=True))
    except OSError:
        pass
