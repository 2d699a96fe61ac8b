"""Cross-entropy whose backward turns the forward's log-probabilities into the gradient in place.

torch's `F.cross_entropy` keeps the (B, C, H, W) log-softmax for the backward, and the backward
then allocates two more buffers of that size: NLLLoss's gradient (zeros and a scatter) and
log-softmax's. At the loss's full resolution (150 classes, 4x256x256: 157 MB each) that is most
of the loss's cost on the CPU. The gradient is `(softmax - one_hot(target)) * s` per pixel, with
`s = w_target * dL / (sum of the labelled pixels' class weights)` for the mean, so here the saved
log-probabilities become it: exp, a multiply per pixel, a scatter at the targets. The loss is
torch's (the same `log_softmax` and `nll_loss` calls); the gradient equals torch's to float
rounding (tests/methods/test_cross_entropy.py). First-order gradients through one backward
only (no `create_graph`, `retain_graph` reuse or `torch.func` transforms): all training takes.
The engine trains with it on the CPU (`fused_cross_entropy_loss()`, benchmark/train/engine.py
`step_kernels`); perf figure 11 times it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.overrides import has_torch_function

TORCH_CROSS_ENTROPY = F.cross_entropy  # torch's own, as imported (the swap restores what it found)
REDUCTIONS = ("mean", "sum")
# The fused backward trades two passes over the logits for a few over the pixels (targets and
# per-pixel factors): it pays on large logits with many classes, so smaller ones keep torch's.
# Scratch timings (2 threads, the allocator setting of CPU runs, scratch shapes): 0.45-0.72x
# torch's time from 8M logits with 32-150 classes, 0.83x at 4x19x256x256 (5M), 0.80-0.98x with
# 16-32 classes at 2.1-3.1M, 0.96-1.08x with 6-11 classes at 3M, 1.0-1.3x at 0.6-1.4M logits of
# 11-32 classes.
FUSED_MIN_NUMEL = 1 << 21
FUSED_MIN_CLASSES = 16


def fuses(logits: Tensor) -> bool:
    """Whether the swap computes a loss of these (N, C, ...) logits fused (by size alone)."""
    return logits.numel() >= FUSED_MIN_NUMEL and logits.shape[1] >= FUSED_MIN_CLASSES


class _FusedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, logits: Tensor, target: Tensor, weight: Tensor | None,
                ignore_index: int, reduction: str) -> Tensor:
        log_p = torch.log_softmax(logits, dim=1)
        loss = F.nll_loss(log_p, target, weight, ignore_index=ignore_index, reduction=reduction)
        ctx.save_for_backward(log_p, target, weight)
        ctx.ignore_index, ctx.reduction = ignore_index, reduction  # type: ignore[attr-defined]
        ctx.consumed = False  # type: ignore[attr-defined]
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.consumed:
            raise RuntimeError("fused cross-entropy: its saved log-probabilities became the "
                               "gradient in the first backward; use torch's F.cross_entropy "
                               "(outside the engine's step_kernels) to go backward twice")
        ctx.consumed = True
        log_p, target, weight = ctx.saved_tensors
        labelled = target != ctx.ignore_index
        index = torch.where(labelled, target, 0).long()  # any class for ignored pixels: s = 0
        mean = ctx.reduction == "mean"
        # s per pixel: 0 on ignored pixels whatever the scale or their stand-in class's weight;
        # the mean's scale as torch's: 0 where nothing is labelled, nan where the labelled
        # weights sum to 0
        if weight is None:
            scale = (torch.where(labelled.any(), grad_loss / labelled.sum(), 0.0) if mean
                     else grad_loss)
            s = torch.where(labelled, scale.to(log_p.dtype), 0.0)
        else:
            per_pixel = torch.where(labelled, weight.to(log_p.dtype)[index], 0.0)
            scale = (torch.where(labelled.any(), grad_loss / per_pixel.sum(), 0.0) if mean
                     else grad_loss)
            s = torch.where(labelled, per_pixel * scale, 0.0)
        s = s.unsqueeze(1)  # (B, 1, ...): dL/dlogit = p * s, minus s at the target
        grad = log_p.exp_().mul_(s)
        grad.scatter_add_(1, index.unsqueeze(1), s.neg_())
        return grad, None, None, None, None


def fused_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None,
                        ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """`F.cross_entropy` of (N, C, ...) `logits` against class indices `target` (N, ...), mean
    or sum, with the in-place backward above (first-order gradients, one backward)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"fused_cross_entropy: reduction {reduction!r}; use one of {REDUCTIONS}")
    return _FusedCrossEntropy.apply(logits, target, weight, ignore_index, reduction)


def training_cross_entropy(fallback: Callable[..., Tensor] = TORCH_CROSS_ENTROPY
                           ) -> Callable[..., Tensor]:
    """An `F.cross_entropy` that is fused for the training loss (a float32/float64 CPU input that
    `fuses` and needs a gradient, class-index targets, mean or sum) and calls `fallback` for
    every other call."""

    def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                      size_average: Any = None, ignore_index: int = -100, reduce: Any = None,
                      reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
        if (has_torch_function((input, target, weight))  # tensor subclasses: torch's dispatch
                or input.device.type != "cpu" or input.dim() < 2 or not fuses(input)
                or input.dtype not in (torch.float32, torch.float64)
                or not (input.requires_grad and torch.is_grad_enabled())
                or torch.is_autocast_enabled("cpu") or target.is_floating_point()
                or reduction not in REDUCTIONS or size_average is not None
                or reduce is not None or label_smoothing
                or (weight is not None and weight.requires_grad)):
            return fallback(input, target, weight=weight, size_average=size_average,
                            ignore_index=ignore_index, reduce=reduce, reduction=reduction,
                            label_smoothing=label_smoothing)
        return fused_cross_entropy(input, target, weight, ignore_index, reduction)

    cross_entropy.fused = True  # type: ignore[attr-defined]  # what the swap put in place
    return cross_entropy


@contextlib.contextmanager
def fused_cross_entropy_loss() -> Iterator[None]:
    """Within the block, `F.cross_entropy` (and so `nn.CrossEntropyLoss`, in library code too)
    is `training_cross_entropy`, falling back to what was there before, which is restored on
    exit."""
    before = F.cross_entropy
    F.cross_entropy = training_cross_entropy(before)
    try:
        yield
    finally:
        F.cross_entropy = before
