"""Training and evaluation of one run (cell x seed) with Accelerate, on 1 or N processes.

The stages, each in its module: build (build.py), resume (resume.py), the training loop
(loop.py, data order in data.py, one step in step.py), evaluation (evaluate.py). The engine
watches SIGUSR2/SIGTERM/SIGINT from its first line to its last (interrupts.py), so a signal at
any moment ends in a checkpoint the rerun resumes from, bitwise equal (docs/design.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from benchmark.checkpoints.identity import weights_sha256
from benchmark.datasets import DatasetInfo, build_dataset, dataset_info
from benchmark.datasets.staging import staged
from benchmark.store import atomic_write
from benchmark.train.build import build_state, make_accelerator
from benchmark.train.data import (GlobalBatchSampler, labelled_batches, loader_workers,
                                  make_train_loader)
from benchmark.train.evaluate import metrics_from_confusion, predict_confusion
from benchmark.train.interrupts import DeferredSignals
from benchmark.train.loop import train_loop
from benchmark.train.memory import peak_record, reset_peak
from benchmark.train.optim import build_optimizer
from benchmark.train.progress import Heartbeat, TrainLog
from benchmark.train.resume import resume
from benchmark.train.runtime import apply_determinism
from benchmark.train.state import RunContext, TrainState
from benchmark.train.step import NonFiniteLossError, StepOutput, set_lr, training_step
from benchmark.config import Cell

__all__ = ["GlobalBatchSampler", "NonFiniteLossError", "RunResult", "StepOutput",
           "build_optimizer", "eval_windows", "labelled_batches", "loader_workers",
           "make_accelerator", "set_lr", "train_and_evaluate", "training_step",
           "weights_sha256"]


@dataclass
class RunResult:
    """What a finished run measured; the store turns it into a record."""

    metrics: dict[str, Any]
    params: dict[str, int]
    timings: dict[str, float]
    memory: dict[str, Any]
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
    file rewritten every few seconds (step, images/s, time left; train/progress.py); `log_dir`
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
    train_loop(ctx, state, loader, on_step, finish)
    if world > 1:  # DDP keeps rank 0's buffers authoritative; make the final state identical
        for buffer in accelerator.unwrap_model(state.model).buffers():
            torch.distributed.broadcast(buffer, src=0)

    ctx.beat(ctx.total, "evaluating", force=True)
    t1 = time.perf_counter()
    cm = _confusion(ctx, state, val_set, info, workers)
    eval_s = time.perf_counter() - t1
    metrics = metrics_from_confusion(cm.cpu(), info.class_names)
    final_health = state.health.final(accelerator.unwrap_model(state.model), accelerator)
    if final_health is not None:  # prototype heads: usage, collapse, movement per class
        metrics["prototype_health"] = final_health
    ctx.log({"eval/miou": metrics["miou"], "eval/aacc": metrics["aacc"]}, ctx.total)
    final_model = accelerator.unwrap_model(state.model)
    if weights_path is not None and accelerator.is_main_process:
        atomic_write(weights_path, lambda f: torch.save(final_model.state_dict(), f))
    ctx.stop_point(ctx.total, saved=ctx.checkpoint_dir is not None, during="after evaluation")
    ctx.beat(ctx.total, "finished", force=True)
    return RunResult(metrics=metrics,
                     params=state.params, timings=_timings(ctx, state, eval_s, len(val_set)),
                     memory=peak_record(device, peak_was_reset), history=state.history,
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
             ) -> dict[str, float]:
    """Training and evaluation times and throughputs, and the step the run resumed from."""
    sorted_times = sorted(state.step_times)
    train_s = state.train_s
    return {
        "train_s": train_s,
        "eval_s": eval_s,
        "step_s_median": sorted_times[len(sorted_times) // 2] if sorted_times else math.nan,
        "train_img_per_s": ctx.total * ctx.cell.train.batch_size / train_s if train_s else math.nan,
        "eval_img_per_s": val_images / eval_s if eval_s else math.nan,
        "resumed_from_step": state.resumed_from,
    }
