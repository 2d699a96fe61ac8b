"""One run, top to bottom: build the model, data and optimizer (resuming from the last
checkpoint), the training loop and its step, the final checkpoint, evaluation, the result.

Like Accelerate's examples, `train_and_evaluate` reads in execution order; the pieces it calls
live in this module in the same order, and the concepts it uses in the modules beside it:
checkpoint.py (state, checkpoints, resume, signals), optim.py (optimizer, schedule, loss),
data.py (loaders), evaluate.py (metrics), telemetry.py (progress, heartbeat, TensorBoard,
prototype health, memory).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.profiler import record_function
from tqdm import tqdm

from benchmark.checkpoints import load_pretrained
from benchmark.checkpoints.identity import weights_sha256
from benchmark.config import Cell
from benchmark.cpu_memory import tune_cpu_allocator
from benchmark.datasets import DatasetInfo, build_dataset, dataset_info
from benchmark.datasets.staging import Finish, move, staged
from benchmark.records import Memory, Metrics, Params, Timings  # what RunResult holds
from benchmark.store import atomic_write
from benchmark.train.checkpoint import DeferredSignals, RunContext, TrainState, resume, save_state
from benchmark.train.data import (GlobalBatchSampler, labelled_batches, loader_workers,
                                  make_train_loader)
from benchmark.train.evaluate import metrics_from_confusion, predict_confusion
from benchmark.train.optim import apply_lr, build_optimizer, rescale_aux_loss, seg_cross_entropy
from benchmark.train.telemetry import (HealthMonitor, Heartbeat, TrainLog, peak_record,
                                       prototype_scalars, reset_peak)
from methods import build_model, count_params
from methods.cross_entropy import fused_cross_entropy_loss
from methods.deterministic import deterministic_ops
from methods.interpolation import matmul_backward_interpolation


# ------------------------------------------------------------------------------------------ one run


__all__ = ["GlobalBatchSampler", "NonFiniteLossError", "RunResult", "StepOutput",
           "build_optimizer", "eval_windows", "labelled_batches", "loader_workers",
           "make_accelerator", "set_lr", "train_and_evaluate", "training_step",
           "weights_sha256"]


@dataclass
class RunResult:
    """What a finished run measured; the store turns it into a record."""

    metrics: Metrics
    params: Params
    timings: Timings
    memory: Memory
    history: list[dict[str, float]] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    weights_sha256: str = ""
    pretrained: dict[str, Any] = field(default_factory=dict)  # backbone file, sha256, tensors


def eval_windows(cell: Cell) -> dict[str, tuple[int, int] | None]:
    """`predict_confusion`'s window and stride for the cell's eval mode (None: whole image)."""
    e = cell.eval
    if e.mode != "slide":
        return {"window": None, "stride": None}
    return {"window": (e.window_h, e.window_w), "stride": (e.stride_h, e.stride_w)}


def train_and_evaluate(cell: Cell, seed: int, progress: bool = True,
                       accelerator: Accelerator | None = None,
                       checkpoint_dir: Path | None = None,
                       weights_path: Path | None = None,
                       on_step: Callable[[int], None] | None = None,
                       heartbeat_path: Path | None = None,
                       log_dir: Path | None = None) -> RunResult:
    """Train `cell` with `seed` for `cell.train.iters` steps, then evaluate on the val split.

    With `checkpoint_dir`, state is saved every `train.checkpoint_every` steps, at the end of
    training (before evaluation) and when SIGUSR2, SIGTERM or SIGINT arrives; a run that finds
    a valid checkpoint there continues from it (or only evaluates, from the final one); the
    result is bitwise identical to an uninterrupted run (on the CPU). Signals are honoured from
    the first line on: at step boundaries, between evaluation batches and after the weights are
    saved. `weights_path` receives the final state dict. `on_step(step)` is called after every
    training step (e.g. a profiler's `step`, perf/profile_step.py). `heartbeat_path` is a JSON
    file rewritten every few seconds (step, images/s, time left; train/telemetry.py); `log_dir`
    receives TensorBoard scalars (losses, lr, throughput, evaluation mIoU).
    """
    with DeferredSignals() as signals:  # first: a signal during start-up is not lost
        accelerator = accelerator or make_accelerator(cell, log_dir)
        ctx = RunContext(cell, seed, accelerator, signals, checkpoint_dir, progress,
                         tracker=TrainLog(accelerator, log_dir))
        try:
            return _run(ctx, weights_path, heartbeat_path, on_step)
        finally:
            ctx.tracker.close()


def _run(ctx: RunContext, weights_path: Path | None, heartbeat_path: Path | None,
         on_step: Callable[[int], None] | None) -> RunResult:
    """Build, resume, train, evaluate, save the weights; see `train_and_evaluate`."""
    cell, accelerator = ctx.cell, ctx.accelerator
    device, world = accelerator.device, accelerator.num_processes
    apply_determinism(cell.train)  # before the first cuBLAS call
    if device.type == "cpu":
        tune_cpu_allocator()
    set_seed(ctx.seed)
    peak_was_reset = reset_peak(device)
    info = dataset_info(cell.data)
    train_set = build_dataset(cell.data, "train")
    val_set = build_dataset(cell.data, cell.data.val_split)
    state = build_state(ctx, info)
    folder = resume(ctx, state)
    ctx.heartbeat = Heartbeat(heartbeat_path if accelerator.is_main_process else None,
                              ctx.total, cell.train.batch_size, state.step)
    ctx.beat(state.step, force=True)
    ctx.stop_point(state.step, saved=folder is not None)

    sampler = GlobalBatchSampler(len(train_set), cell.train.batch_size, ctx.total, ctx.seed,
                                 accelerator.process_index, world, start_step=state.step)
    workers = loader_workers(cell.train.num_workers, world)
    host_set, finish = staged(train_set)  # uint8 from the workers, normalised on the device
    loader = make_train_loader(host_set, sampler, workers, ctx.seed, device)
    ctx.say(f"training {cell.row} seed {ctx.seed}: step {state.step} of {ctx.total}, "
            f"{world} process(es), {device}")
    with step_kernels(cell.train, device):
        train_loop(ctx, state, loader, on_step, finish)
    if world > 1:  # DDP keeps rank 0's buffers authoritative; make the final state identical
        for buffer in accelerator.unwrap_model(state.model).buffers():
            torch.distributed.broadcast(buffer, src=0)

    ctx.beat(ctx.total, "evaluating", force=True)
    t1 = time.perf_counter()
    cm = _confusion(ctx, state, val_set, info, workers)
    eval_s = time.perf_counter() - t1
    metrics = Metrics.from_dict(metrics_from_confusion(cm.cpu(), info.class_names))
    # prototype heads: usage, collapse, movement per class (None, left out, for the others)
    metrics.prototype_health = state.health.final(accelerator.unwrap_model(state.model),
                                                  accelerator)
    ctx.log({"eval/miou": metrics.miou, "eval/aacc": metrics.aacc}, ctx.total)
    final_model = accelerator.unwrap_model(state.model)
    if weights_path is not None and accelerator.is_main_process:
        atomic_write(weights_path, lambda f: torch.save(final_model.state_dict(), f))
    ctx.stop_point(ctx.total, saved=ctx.checkpoint_dir is not None, during="after evaluation")
    ctx.beat(ctx.total, "finished", force=True)
    return RunResult(metrics=metrics, params=Params.from_dict(state.params),
                     timings=_timings(ctx, state, eval_s, len(val_set)),
                     memory=peak_record(device, peak_was_reset),
                     history=state.history,
                     confusion=cm.cpu().tolist(), weights_sha256=weights_sha256(final_model),
                     pretrained=state.pretrained)


def _confusion(ctx: RunContext, state: TrainState, val_set: Any, info: DatasetInfo,
               workers: int) -> torch.Tensor:
    """The val split's confusion matrix, summed over processes; signals are acted on between
    batches (the final checkpoint already exists: the rerun only evaluates)."""
    cell, accelerator = ctx.cell, ctx.accelerator
    saved = ctx.checkpoint_dir is not None
    cm = predict_confusion(
        accelerator.unwrap_model(state.model), val_set, info.num_classes, cell.data.ignore_index,
        cell.eval.batch_size, accelerator.device, accelerator.process_index,
        accelerator.num_processes, progress=ctx.show, num_workers=workers, **eval_windows(cell),
        logit_resize=cell.eval.logit_resize,
        between_batches=lambda: ctx.stop_point(ctx.total, saved, "during evaluation"))
    return accelerator.reduce(cm, reduction="sum") if accelerator.num_processes > 1 else cm


def _timings(ctx: RunContext, state: TrainState, eval_s: float, val_images: int
             ) -> Timings:
    """Training and evaluation times and throughputs, and the step the run resumed from."""
    sorted_times = sorted(state.step_times)
    train_s = state.train_s
    return Timings(
        train_s=train_s,
        eval_s=eval_s,
        step_s_median=sorted_times[len(sorted_times) // 2] if sorted_times else math.nan,
        train_img_per_s=ctx.total * ctx.cell.train.batch_size / train_s if train_s else math.nan,
        eval_img_per_s=val_images / eval_s if eval_s else math.nan,
        resumed_from_step=state.resumed_from,
    )


# ----------------------------------------------------------------------------------- building a run


def make_accelerator(cell: Cell, log_dir: Path | None = None) -> Accelerator:
    """Accelerate picks up 1..N processes from the environment. With `log_dir`, its TensorBoard
    tracker writes there (benchmark/train/telemetry.py).

    Precision is not Accelerate's: its state is one per process and refuses a second setting
    (an inline grid mixes `train.amp` on and off), and its prepared model would evaluate in
    bf16. The training step takes `amp_autocast` instead; evaluation runs in float32, as
    MMSegmentation's does."""
    use_gpu = torch.cuda.is_available()
    if getattr(cell.train, "deterministic", False):  # before the Accelerator starts CUDA
        deterministic_cublas()
    if log_dir is None:
        return Accelerator(cpu=not use_gpu, mixed_precision="no")
    return Accelerator(cpu=not use_gpu, mixed_precision="no", log_with="tensorboard",
                       project_dir=str(log_dir))


def amp_autocast(train: Any, device: torch.device) -> Callable[[], Any]:
    """The training step's autocast: bf16 on a GPU with `train.amp` (no loss scaling: bf16 has
    float32's range), nothing on the CPU."""
    enabled = bool(getattr(train, "amp", False)) and device.type == "cuda"
    return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=enabled)


def build_state(ctx: RunContext, info: DatasetInfo) -> TrainState:
    """The cell's model with its pretrained weights and its optimizer, prepared for the run's
    processes (SyncBN across GPUs, as the released recipes train), at step 0."""
    cell, accelerator = ctx.cell, ctx.accelerator
    model = build_model(cell.model, info.num_classes, cell.data.ignore_index)
    pretrained: dict[str, Any] = {}
    if cell.model.pretrained:  # local file only; a missing file is a one-line PretrainedError
        report = load_pretrained(model, cell.model.pretrained)
        ctx.say(report.summary())
        pretrained = {"file": report.path, "sha256": report.sha256, "format": report.format,
                      "tensors_loaded": report.loaded, "tensors_expected": report.expected}
    health = HealthMonitor(model)  # before resuming: it keeps the initial prototypes
    params = count_params(model)
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = prepare_model(model, cell.train)  # channels_last, torch.compile (runtime.py)
    optimizer = build_optimizer(model, cell, accelerator.device)  # before prepare moves it
    model, optimizer = accelerator.prepare(model, optimizer)
    return TrainState(model=model, optimizer=optimizer, params=params, health=health,
                      pretrained=pretrained)


# -------------------------------------------------------------------------------- the training loop


def train_loop(ctx: RunContext, state: TrainState, loader: Iterable[Any],
               on_step: Callable[[int], None] | None = None, finish: Finish = move) -> None:
    """Train from `state.step` to the last step; `on_step(step)` after each step (e.g. a
    profiler's `step`, perf/profile_step.py), before that step's boundary is handled.
    `finish(batch, device)` makes the step's inputs of a loaded batch on the device (the
    normalisation of a staged pipeline, benchmark/datasets/staging.py)."""
    cell, accelerator = ctx.cell, ctx.accelerator
    device = accelerator.device
    state.model.train()
    clip = ((lambda: accelerator.clip_grad_norm_(state.model.parameters(), cell.train.grad_clip))
            if cell.train.grad_clip > 0 else None)
    finite = finite_on_every_process(accelerator) if accelerator.num_processes > 1 else None
    bar = tqdm(total=ctx.total, initial=state.step, desc=f"train {cell.row} seed{ctx.seed}",
               disable=not ctx.show, leave=False)
    t0, train_s = time.perf_counter(), state.train_s
    for step, batch in enumerate(labelled_batches(loader), start=state.step):
        t_step = time.perf_counter()
        lr = set_lr(state.optimizer, cell, step)
        images, labels = finish(batch, device, channels_last=cell.train.channels_last)
        result = training_step(state.model, state.optimizer, images, labels,
                               cell.data.ignore_index, autocast=amp_autocast(cell.train, device),
                               backward=accelerator.backward, clip=clip, step=step,
                               ce_average=cell.train.ce_average,
                               ce_weights=cell.train.ce_weights, finite=finite)
        state.step_times.append(time.perf_counter() - t_step)
        if state.health is not None:
            state.health.observe(result.out.state)
        if step % cell.train.log_every == 0 or step == ctx.total - 1:
            entry = {"step": step, "loss": result.loss.item(), "ce": result.ce.item(), "lr": lr}
            entry.update({k: v.item() for k, v in result.out.losses.items()})
            if state.health is not None:
                entry.update(state.health.summary(accelerator.unwrap_model(state.model)))
            state.history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
            if ctx.logging:
                log_scalars(ctx, state, entry)
        bar.update(1)
        if on_step is not None:
            on_step(step)
        state.step, state.train_s = step + 1, train_s + time.perf_counter() - t0
        ctx.beat(state.step)
        step_boundary(ctx, state)
    bar.close()
    if device.type == "cuda":  # the last step's kernels belong to the training time
        torch.cuda.synchronize(device)
    state.train_s = train_s + time.perf_counter() - t0


def step_boundary(ctx: RunContext, state: TrainState) -> None:
    """After a step: checkpoint when due (periodic, last step, signal), then act on a signal."""
    signum = ctx.agreed_signal()
    every = ctx.cell.train.checkpoint_every
    due = signum or state.step == ctx.total or (every and state.step % every == 0)
    if ctx.checkpoint_dir is not None and due:
        save_state(ctx, state)
    ctx.stop_point(state.step, saved=True, signum=signum)


def log_scalars(ctx: RunContext, state: TrainState, entry: dict[str, float]) -> None:
    """TensorBoard scalars of a logged step: loss terms, lr, throughput, prototype statistics."""
    values = {f"train/{k}": v for k, v in entry.items() if k != "step"}
    values["train/images_per_s"] = ctx.cell.train.batch_size / state.step_times[-1]
    values.update(prototype_scalars(ctx.accelerator.unwrap_model(state.model)))
    ctx.log(values, int(entry["step"]))


# -------------------------------------------------------------------------------- one training step


def finite_on_every_process(accelerator: Accelerator) -> Callable[[torch.Tensor], bool]:
    """`finite(loss)`: whether the loss is finite in every process (a collective, as
    `agreed_signal`); a process stopping alone would leave the others in DDP's all-reduce."""
    def finite(loss: torch.Tensor) -> bool:
        bad = (~torch.isfinite(loss.detach())).to(torch.int32).reshape(1)
        return not int(accelerator.reduce(bad, reduction="max").item())

    return finite


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class StepOutput:
    """One training step's loss (total and cross-entropy) and the head's output."""

    loss: torch.Tensor
    ce: torch.Tensor
    out: Any


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  images: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                  autocast: Callable[[], Any] = contextlib.nullcontext,
                  backward: Callable[[torch.Tensor], None] | None = None,
                  clip: Callable[[], Any] | None = None, step: int = 0,
                  ce_average: str = "labelled", ce_weights: str = "none",
                  finite: Callable[[torch.Tensor], bool] | None = None) -> StepOutput:
    """Forward, loss (upsampled cross-entropy + the head's terms), backward, optimizer step.

    `ce_average` (`train.ce_average`) normalises the main and auxiliary cross-entropy,
    `ce_weights` (`train.ce_weights`) weights the main one's classes (benchmark/train/optim.py).

    Each phase is a `torch.profiler` range (`train/forward`, `train/loss`, `train/backward`,
    `train/optimizer`), nearly free when no profiler runs. `backward`/`clip` are Accelerate's
    and `autocast` is `amp_autocast` in the engine; plain autograd by default (perf/).
    `finite(loss)` says whether to go on (default: this loss is finite; several processes
    agree first, `finite_on_every_process`).
    """
    with autocast():
        with record_function("train/forward"):
            out = model(images, labels)
        with record_function("train/loss"):
            # float32 before upsampling: under bf16 autocast the head's logits are bf16, and
            # upsampling keeps its input's dtype (a no-op in float32)
            logits = F.interpolate(out.logits.float(), size=labels.shape[-2:], mode="bilinear",
                                   align_corners=False)
            ce = seg_cross_entropy(logits, labels, ignore_index, ce_average, ce_weights)
            rescale_aux_loss(out.losses, labels, ignore_index, ce_average)
            loss = ce + sum(out.losses.values())
    if not (bool(torch.isfinite(loss)) if finite is None else finite(loss)):
        where = (f"loss became {loss.item()}" if not torch.isfinite(loss)
                 else "loss became non-finite in another process")
        raise NonFiniteLossError(
            f"{where} at step {step}; lower train.lr or set train.grad_clip")
    with record_function("train/backward"):
        optimizer.zero_grad(set_to_none=True)
        (backward or torch.Tensor.backward)(loss)
    with record_function("train/optimizer"):
        if clip is not None:
            clip()
        optimizer.step()
    return StepOutput(loss, ce, out)


def set_lr(optimizer: torch.optim.Optimizer, cell: Cell, step: int) -> float:
    """Learning rate as a pure function of the step (nothing to save for resume); each group's
    from its own base lr (benchmark/train/optim.py)."""
    return apply_lr(optimizer, cell.train, step)


# -------------------------------------------------------------- compile, channels-last, determinism


COMPILE_BACKEND = os.environ.get("PROTOSEG_COMPILE_BACKEND", "inductor")
CUBLAS_WORKSPACE = ":4096:8"  # the setting CUDA's docs give for reproducible cuBLAS results
CUBLAS_TOO_LATE = (
    "train.deterministic: CUDA ran in this process before CUBLAS_WORKSPACE_CONFIG was set, so "
    f"cuBLAS may not be deterministic; export CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} before "
    "starting, or run deterministic cells in their own processes (--executor local or slurm)")


def step_kernels(train: Any, device: torch.device) -> contextlib.AbstractContextManager:
    """The training loop's kernel swaps (in `torch.nn.functional`, methods/):
    - on a GPU with `train.deterministic`: bilinear upsampling and cross-entropy reductions in
      deterministic kernels (methods/deterministic.py: torch has none for them), attention on
      its math backend;
    - on the CPU (eager): bilinear upsampling with a matmul backward (methods/interpolation.py:
      torch's CPU backward kernel is several times slower) and cross-entropy whose backward
      reuses the log-softmax buffer (methods/cross_entropy.py); both equal to float rounding;
    torch's own kernels otherwise (a compiled model gets inductor's)."""
    if device.type == "cuda":
        return deterministic_ops() if getattr(train, "deterministic", False) \
            else contextlib.nullcontext()
    if device.type == "cpu" and not getattr(train, "compile", False):
        return cpu_training_kernels()
    return contextlib.nullcontext()


@contextlib.contextmanager
def cpu_training_kernels() -> Iterator[None]:
    """The eager CPU step's two swaps, in place from entering the block to leaving it."""
    with matmul_backward_interpolation(), fused_cross_entropy_loss():
        yield


def apply_determinism(train: Any) -> bool:
    """Set deterministic kernels on or off as `train.deterministic` says (both ways: an inline
    grid runs cells one after another in one process); returns whether they are on.

    Before the model is built: cuBLAS reads its workspace setting once per process, when CUDA
    first uses it. Where CUDA already ran without the setting, a deterministic cell warns."""
    on = bool(getattr(train, "deterministic", False))
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False
    if on:
        deterministic_cublas()
    return on


def deterministic_cublas() -> None:
    """CUBLAS_WORKSPACE_CONFIG for reproducible cuBLAS results, unless already set; a warning
    where CUDA already ran in this process (cuBLAS may have read the setting before)."""
    if "CUBLAS_WORKSPACE_CONFIG" in os.environ:
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        warnings.warn(CUBLAS_TOO_LATE, stacklevel=3)
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE


def prepare_model(model: torch.nn.Module, train: Any) -> torch.nn.Module:
    """The model laid out and compiled as `train` asks (in place; the same module back)."""
    if getattr(train, "channels_last", False):
        model.to(memory_format=torch.channels_last)
    if getattr(train, "compile", False):
        model.compile(backend=COMPILE_BACKEND, dynamic=None)
    return model
