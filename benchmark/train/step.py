"""One training step (forward, losses, backward, optimizer) and the learning rate of a step.

Shared by the engine's loop and the preflight (benchmark/launch/preflight.py), so both run the
same step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from benchmark.config import Cell
from benchmark.train.loss import rescale_aux_loss, seg_cross_entropy
from benchmark.train.schedule import apply_lr


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
                  ce_average: str = "labelled", ce_weights: str = "none") -> StepOutput:
    """Forward, loss (upsampled cross-entropy + the head's terms), backward, optimizer step.

    `ce_average` (`train.ce_average`) normalises the main and auxiliary cross-entropy,
    `ce_weights` (`train.ce_weights`) weights the main one's classes (benchmark/train/loss.py).

    Each phase is a `torch.profiler` range (`train/forward`, `train/loss`, `train/backward`,
    `train/optimizer`), nearly free when no profiler runs. `backward`/`autocast`/`clip` are
    Accelerate's in the engine; plain autograd by default (perf/ benchmarks).
    """
    with autocast():
        with record_function("train/forward"):
            out = model(images, labels)
        with record_function("train/loss"):
            logits = F.interpolate(out.logits, size=labels.shape[-2:], mode="bilinear",
                                   align_corners=False)
            ce = seg_cross_entropy(logits.float(), labels, ignore_index, ce_average, ce_weights)
            rescale_aux_loss(out.losses, labels, ignore_index, ce_average)
            loss = ce + sum(out.losses.values())
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"loss became {loss.item()} at step {step}; lower train.lr or set train.grad_clip"
        )
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
    from its own base lr (benchmark/train/schedule.py)."""
    return apply_lr(optimizer, cell.train, step)
