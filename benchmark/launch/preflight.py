"""Preflight: check every cell of a grid before GPU hours are spent.

`preflight_cell` builds the real model (with its pretrained weights when `model.pretrained` is
set), counts parameters, runs one training step (every loss, the optimizer step and, for
ProtoSeg, the prototype update) and one evaluation forward at the recipe's crop size on random
images, and measures step time and peak memory (GPU: allocator peak; CPU: the process's peak
resident memory during the cell, Linux). The step's labels are the model's own predictions
(same dropout draw), so the momentum update, which only uses correctly predicted pixels, runs.

The cheap memory estimate that `--dry-run` prints lives in `benchmark/launch/memory.py`.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tabulate import tabulate

from benchmark.config import Cell
from benchmark.train.telemetry import peak_bytes, reset_peak
from benchmark.launch.memory import crop_size, per_device_batch
from methods import build_model, count_params

PARAM_TOLERANCE_M = 0.3  # a learnable count this far from the paper's is flagged


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
    return names + list(cell.model.head.options.loss_names())  # the head's own terms


def preflight_cell(cell: Cell, device: torch.device | str = "cpu", batch: int = 1,
                   seed: int = 0) -> PreflightResult:
    """One training step and one evaluation forward of `cell` on random images (see module)."""
    from benchmark.checkpoints import load_pretrained
    from benchmark.train.optim import build_optimizer

    device = torch.device(device)
    h, w = crop_size(cell)
    result = PreflightResult(cell=cell, batch=batch, crop=(h, w), device=str(device))
    model = optimizer = None
    try:
        torch.manual_seed(seed)
        reset_peak(device)
        model = build_model(cell.model, cell.data.num_classes, cell.data.ignore_index)
        if cell.model.pretrained:
            result.pretrained = load_pretrained(model, cell.model.pretrained).summary()
        params = count_params(model)
        result.learnable, result.total = params["learnable"], params["total"]
        model.to(device).train()
        optimizer = build_optimizer(model, cell)
        images = torch.randn(batch, 3, h, w, device=device)
        _check_training_step(cell, model, optimizer, images, result)
        _check_evaluation(cell, model, images, result)
        result.peak_bytes = peak_bytes(device)
    except Exception as err:  # noqa: BLE001 - every failure is reported in the table
        result.error = f"{type(err).__name__}: {err}".splitlines()[0]
    finally:
        del model, optimizer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def _autocast(cell: Cell, device: torch.device) -> Callable[[], Any]:
    """The engine's training autocast (bf16 on a GPU when `train.amp`, nothing on the CPU)."""
    from benchmark.train.engine import amp_autocast

    return amp_autocast(cell.train, device)


def _check_training_step(cell: Cell, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         images: torch.Tensor, result: PreflightResult) -> None:
    """The engine's training step (benchmark/train/engine.py) on labels that are the model's own
    predictions under the same dropout draw, an ignore band on top; times it and checks the
    loss terms and that prototypes move."""
    from benchmark.train.engine import step_kernels, training_step

    device, (h, w), ignore = images.device, images.shape[-2:], cell.data.ignore_index
    before = model.head.prototype_vectors()
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad(), _autocast(cell, device)():
        pred = model(images).logits.argmax(1, keepdim=True).float()
    labels = F.interpolate(pred, size=(h, w), mode="nearest")[:, 0].long()
    labels[:, : max(1, h // 8)] = ignore

    _sync(device)
    t0 = time.perf_counter()
    with step_kernels(cell.train, device):  # the kernels the training loop runs with
        step = training_step(model, optimizer, images, labels, ignore,
                             autocast=_autocast(cell, device), ce_average=cell.train.ce_average,
                             ce_weights=cell.train.ce_weights)
    _sync(device)
    result.step_s = time.perf_counter() - t0
    losses = {"ce": step.ce, **step.out.losses}
    result.losses = sorted(losses)
    missing = [n for n in expected_losses(cell) if n not in losses]
    if missing:
        raise RuntimeError(f"training step lacks loss terms {missing}")
    if before is not None:
        result.prototypes_moved = not torch.equal(before, model.head.prototype_vectors())
        if not result.prototypes_moved:
            raise RuntimeError("prototypes did not move in the training step")


def _check_evaluation(cell: Cell, model: torch.nn.Module, images: torch.Tensor,
                      result: PreflightResult) -> None:
    """One evaluation forward, in float32 as the engine evaluates: timed; logits of the right
    shape and no loss terms."""
    batch, c, device = images.shape[0], cell.data.num_classes, images.device
    model.eval()
    _sync(device)
    t1 = time.perf_counter()
    with torch.no_grad():
        out = model(images)
    _sync(device)
    result.eval_s = time.perf_counter() - t1
    if out.logits.shape[:2] != (batch, c) or out.losses:
        raise RuntimeError(f"evaluation output {tuple(out.logits.shape)} with losses "
                           f"{sorted(out.losses)}; expected ({batch}, {c}, h, w) and none")


def _m(n: float | None, signed: bool = False) -> str:
    if n is None:
        return "–"
    return f"{n:+.2f}" if signed else f"{n:.2f}"


def _seconds(s: float) -> str:
    return "–" if math.isnan(s) else f"{s:.2f}"


def _memory(n_bytes: int) -> str:
    return "–" if not n_bytes else f"{n_bytes / 2**30:.2f} GiB"


def format_preflight(results: list[PreflightResult]) -> str:
    """The preflight table (GitHub Markdown), then one line per error or loaded checkpoint."""
    rows = []
    for r in results:
        c = r.cell
        rows.append([
            f"{c.row} / {c.column}" if c.column else c.row,
            _m(r.learnable / 1e6 if r.learnable else None),
            _m(r.total / 1e6 if r.total else None),
            _m(c.paper_params_m) if c.paper_params_m is not None else "–",
            _m(r.params_diff_m, signed=True),
            f"{r.crop[0]}x{r.crop[1]}x{r.batch}",
            _seconds(r.step_s),
            _seconds(r.eval_s),
            _memory(r.peak_bytes),
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
        if echo:  # each cell's result as it ends: a run stopped part-way keeps the cells done
            print(f"  -> {result_line(results[-1])}", flush=True)
    return results


def result_line(r: PreflightResult) -> str:
    """One finished cell in a line: status, step and evaluation seconds, peak memory."""
    line = (f"{r.status}: step {_seconds(r.step_s)} s, eval {_seconds(r.eval_s)} s, "
            f"peak memory {_memory(r.peak_bytes)}")
    return line + (f"; {r.error}" if r.error else "")
