"""Preflight: check every cell of a grid before GPU hours are spent, and estimate its memory.

`preflight_cell` builds the real model (with its pretrained weights when `model.pretrained` is
set), counts parameters, runs one training step (every loss, the optimizer step and, for
ProtoSeg, the prototype update) and one evaluation forward at the recipe's crop size on random
images, and measures step time and peak memory (GPU: allocator peak; CPU: the process's peak
resident memory during the cell, Linux). The step's labels are the model's own predictions
(same dropout draw), so the momentum update, which only uses correctly predicted pixels, runs.

`estimate_memory` is the cheap estimate `--dry-run` prints: the model on PyTorch's meta device
(no compute, no memory) at the full crop, summing what autograd saves for the backward pass,
plus weights, gradients and optimizer state.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tabulate import tabulate

from benchmark.config import Cell
from benchmark.memory import peak_bytes, reset_peak
from methods import build_model, count_params

PARAM_TOLERANCE_M = 0.3  # a learnable count this far from the paper's is flagged
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

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

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
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = _read_cache(path)
        entries[key] = {"saved": value[0], "params": value[1]}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass


# ----------------------------------------------------------------------------- peak memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- preflight


@dataclass
class PreflightResult:
    """What one cell's preflight measured; `error` is None when every check passed."""

    cell: Cell
    batch: int
    crop: tuple[int, int]
    learnable: int = 0
    total: int = 0
    losses: list[str] = field(default_factory=list)
    prototypes_moved: bool | None = None  # None: the head has no prototypes
    step_s: float = math.nan
    eval_s: float = math.nan
    peak_bytes: int = 0
    device: str = "cpu"
    pretrained: str = ""  # the load report's summary, when weights were loaded
    error: str | None = None

    @property
    def params_diff_m(self) -> float | None:
        if self.cell.paper_params_m is None or not self.learnable:
            return None
        return self.learnable / 1e6 - self.cell.paper_params_m

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        diff = self.params_diff_m
        if diff is not None and abs(diff) > PARAM_TOLERANCE_M:
            return f"params off by >{PARAM_TOLERANCE_M}M"
        return "ok"


def expected_losses(cell: Cell) -> list[str]:
    """Loss terms a training step of this cell must produce."""
    names = ["ce"]
    if cell.model.aux_weight > 0:
        names.append("aux")
    head = cell.model.head
    if head.name == "prototype":
        names += [n for n, w in (("ppc", head.ppc_weight), ("ppd", head.ppd_weight)) if w > 0]
    if head.name == "pixel_contrast":
        names.append("contrast")  # present (weighted 0) during the warm-up too
    return names


def preflight_cell(cell: Cell, device: torch.device | str = "cpu", batch: int = 1,
                   seed: int = 0) -> PreflightResult:
    """One training step and one evaluation forward of `cell` on random images (see module)."""
    from benchmark.engine import build_optimizer
    from benchmark.pretrained import load_pretrained

    device = torch.device(device)
    h, w = crop_size(cell)
    result = PreflightResult(cell=cell, batch=batch, crop=(h, w), device=str(device))
    model = optimizer = None
    try:
        torch.manual_seed(seed)
        reset_peak(device)
        c, ignore = cell.data.num_classes, cell.data.ignore_index
        model = build_model(cell.model, c, ignore)
        if cell.model.pretrained:
            result.pretrained = load_pretrained(model, cell.model.pretrained).summary()
        params = count_params(model)
        result.learnable, result.total = params["learnable"], params["total"]
        model.to(device).train()
        optimizer = build_optimizer(model, cell)
        images = torch.randn(batch, 3, h, w, device=device)
        protos = getattr(model.head, "prototypes", None)
        before = protos.detach().clone() if protos is not None else None

        amp = cell.train.amp and device.type == "cuda"  # as the engine: bf16 autocast on a GPU

        # labels = the model's own predictions under the same dropout draw, an ignore band on top
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad(), \
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(images).logits.argmax(1, keepdim=True).float()
        labels = F.interpolate(pred, size=(h, w), mode="nearest")[:, 0].long()
        labels[:, : max(1, h // 8)] = ignore

        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(images, labels)
            logits = F.interpolate(out.logits, size=(h, w), mode="bilinear",
                                   align_corners=False)
            losses = {"ce": F.cross_entropy(logits.float(), labels, ignore_index=ignore),
                      **out.losses}
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        result.step_s = time.perf_counter() - t0
        result.losses = sorted(losses)
        missing = [n for n in expected_losses(cell) if n not in losses]
        if missing:
            raise RuntimeError(f"training step lacks loss terms {missing}")
        if before is not None:
            result.prototypes_moved = not torch.equal(before, model.head.prototypes)
            if not result.prototypes_moved:
                raise RuntimeError("prototypes did not move in the training step")

        model.eval()
        _sync(device)
        t1 = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(images)
        _sync(device)
        result.eval_s = time.perf_counter() - t1
        if out.logits.shape[:2] != (batch, c) or out.losses:
            raise RuntimeError(f"evaluation output {tuple(out.logits.shape)} with losses "
                               f"{sorted(out.losses)}; expected ({batch}, {c}, h, w) and none")
        result.peak_bytes = peak_bytes(device)
    except Exception as err:  # noqa: BLE001 - every failure is reported in the table
        result.error = f"{type(err).__name__}: {err}".splitlines()[0]
    finally:
        del model, optimizer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def _m(n: float | None, signed: bool = False) -> str:
    if n is None:
        return "–"
    return f"{n:+.2f}" if signed else f"{n:.2f}"


def format_preflight(results: list[PreflightResult]) -> str:
    """The preflight table (GitHub Markdown), then one line per error or loaded checkpoint."""
    rows = []
    for r in results:
        c = r.cell
        mem = "–" if not r.peak_bytes else f"{r.peak_bytes / 2**30:.2f} GiB"
        rows.append([
            f"{c.row} / {c.column}" if c.column else c.row,
            _m(r.learnable / 1e6 if r.learnable else None),
            _m(r.total / 1e6 if r.total else None),
            _m(c.paper_params_m) if c.paper_params_m is not None else "–",
            _m(r.params_diff_m, signed=True),
            f"{r.crop[0]}x{r.crop[1]}x{r.batch}",
            "–" if math.isnan(r.step_s) else f"{r.step_s:.2f}",
            "–" if math.isnan(r.eval_s) else f"{r.eval_s:.2f}",
            mem,
            "+".join(r.losses) or "–",
            r.status,
        ])
    headers = ["Cell", "Learnable (M)", "All (M)", "Paper (M)", "Δ (M)", "Input HxWxB",
               "Step (s)", "Eval (s)", "Peak mem", "Losses", "Status"]
    text = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
    notes = [f"{r.cell.row}: {r.error}" for r in results if r.error]
    notes += [f"{r.cell.row}: {r.pretrained}" for r in results if r.pretrained]
    if results:
        kind = "GPU allocator peak" if results[0].device.startswith("cuda") else \
            "peak resident memory of the process during the cell (CPU)"
        notes.append(f"device {results[0].device}; peak mem = {kind}; All = learnable + frozen "
                     f"+ prototype buffers; Δ = learnable - paper")
    return text + "\n" + "\n".join(notes) + "\n"


def preflight_ok(results: list[PreflightResult]) -> bool:
    return all(r.status == "ok" for r in results)


# ----------------------------------------------------------------------------- command line


def run_preflight(cells: list[Cell], device: str | None = None, batch: int | None = None,
                  echo: bool = True) -> list[PreflightResult]:
    """Preflight every cell: on the GPU with the recipe's per-GPU batch, on the CPU with 1."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results = []
    for i, cell in enumerate(cells, 1):
        b = batch or (per_device_batch(cell) if dev.type == "cuda" else 1)
        if echo:
            h, w = crop_size(cell)
            print(f"preflight [{i}/{len(cells)}] {cell.row} / {cell.column}: "
                  f"{h}x{w} x {b} on {dev}", flush=True)
        results.append(preflight_cell(cell, dev, b))
    return results


def _record_state(path: Path) -> str:
    """done / failed / ... from the record at `path`, or '-' where there is none."""
    from benchmark.store import read_record

    if not path.exists():
        return "-"
    try:
        return str(read_record(path).get("status") or "unknown")
    except (OSError, ValueError):
        return "unreadable"


def describe_plan(grid: object, runs: list, recipes: dict | None = None) -> str:
    """The `--dry-run` text: per cell its key, seeds and which records exist, model, parameter
    count beside the paper's, estimated GPU memory class; then each recipe in full."""
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
