"""The training loop: steps, history, checkpoints and signals at step boundaries.

Checkpoints are written every `train.checkpoint_every` steps, when a signal arrives and at the
end of training (step == total, before evaluation), so that a signal during evaluation costs
no training (docs/design.md, "Final checkpoint").
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from tqdm import tqdm

from benchmark.datasets.staging import Finish, move
from benchmark.train.data import labelled_batches
from benchmark.train.progress import prototype_scalars
from benchmark.train.resume import save
from benchmark.train.state import RunContext, TrainState
from benchmark.train.step import set_lr, training_step


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
    bar = tqdm(total=ctx.total, initial=state.step, desc=f"train {cell.row} seed{ctx.seed}",
               disable=not ctx.show, leave=False)
    t0, train_s = time.perf_counter(), state.train_s
    for step, batch in enumerate(labelled_batches(loader), start=state.step):
        t_step = time.perf_counter()
        lr = set_lr(state.optimizer, cell, step)
        images, labels = finish(batch, device, channels_last=cell.train.channels_last)
        result = training_step(state.model, state.optimizer, images, labels,
                               cell.data.ignore_index, autocast=accelerator.autocast,
                               backward=accelerator.backward, clip=clip, step=step,
                               ce_average=cell.train.ce_average,
                               ce_weights=cell.train.ce_weights)
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
    state.train_s = train_s + time.perf_counter() - t0


def step_boundary(ctx: RunContext, state: TrainState) -> None:
    """After a step: checkpoint when due (periodic, last step, signal), then act on a signal."""
    signum = ctx.agreed_signal()
    every = ctx.cell.train.checkpoint_every
    due = signum or state.step == ctx.total or (every and state.step % every == 0)
    if ctx.checkpoint_dir is not None and due:
        save(ctx, state)
    ctx.stop_point(state.step, saved=True, signum=signum)


def log_scalars(ctx: RunContext, state: TrainState, entry: dict[str, float]) -> None:
    """TensorBoard scalars of a logged step: loss terms, lr, throughput, prototype statistics."""
    values = {f"train/{k}": v for k, v in entry.items() if k != "step"}
    values["train/images_per_s"] = ctx.cell.train.batch_size / state.step_times[-1]
    values.update(prototype_scalars(ctx.accelerator.unwrap_model(state.model)))
    ctx.log(values, int(entry["step"]))
