"""Resuming a run from the newest valid checkpoint in its checkpoint folder."""

from __future__ import annotations

from pathlib import Path

from benchmark.train import checkpoint
from benchmark.train.state import RunContext, TrainState


def resume(ctx: RunContext, state: TrainState) -> Path | None:
    """Load the newest valid checkpoint (damaged ones are skipped with a warning) into `state`
    and return its folder; None when there is none (the run starts at step 0)."""
    if ctx.checkpoint_dir is None:
        return None
    found = checkpoint.latest_valid(ctx.checkpoint_dir)
    if found is None:
        return None
    folder, meta = found
    checkpoint.load(ctx.accelerator, folder)
    state.restore(meta["step"], meta["extra"])
    ctx.say(f"resuming from {folder}")
    return folder


def save(ctx: RunContext, state: TrainState) -> None:
    """Checkpoint `state` at its step (all processes take part)."""
    assert ctx.checkpoint_dir is not None
    checkpoint.save(ctx.accelerator, ctx.checkpoint_dir, state.step, state.extra())
