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
# Smaller losses keep torch's: the fused backward's few extra small ops cost about what it saves
# there (scratch timings, 2 threads: 8x11x64x64, 360k logits, 1.0-1.5x torch's time; 1x150x64x64,
# 600k, 0.84x; perf figure 11: 0.52-0.74x at the 150-class losses of 2.5M-39M logits).
FUSED_MIN_NUMEL = 1 << 19


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
        safe = target.masked_fill(~labelled, 0).long()  # any class: ignored pixels get 0 below
        per_pixel = (labelled.to(log_p.dtype) if weight is None
                     else torch.where(labelled, weight.to(log_p.dtype)[safe], 0.0))
        if ctx.reduction == "mean":  # as torch: 0 where nothing is labelled, nan for 0 weight
            scale = torch.where(labelled.any(), grad_loss / per_pixel.sum(),
                                torch.zeros_like(grad_loss))
        else:
            scale = grad_loss
        # (B, 1, ...): dL/dlogit = p * s, minus s at the target; 0 on ignored pixels whatever
        # the scale (inf where the labelled weights sum to 0, as torch's)
        s = torch.where(labelled, per_pixel * scale, 0.0).unsqueeze(1)
        grad = log_p.exp_().mul_(s)
        grad.scatter_add_(1, safe.unsqueeze(1), -s)
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
    """An `F.cross_entropy` that is fused for the training loss (a float32/float64 CPU input of at
    least `FUSED_MIN_NUMEL` values that needs a gradient, class-index targets, mean or sum) and
    calls `fallback` for every other call."""

    def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                      size_average: Any = None, ignore_index: int = -100, reduce: Any = None,
                      reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
        if (input.device.type != "cpu" or input.dim() < 2 or input.numel() < FUSED_MIN_NUMEL
                or input.dtype not in (torch.float32, torch.float64)
                or not (input.requires_grad and torch.is_grad_enabled())
                or torch.is_autocast_enabled("cpu") or target.is_floating_point()
                or reduction not in REDUCTIONS or size_average is not None
                or reduce is not None or label_smoothing
                or (weight is not None and weight.requires_grad)
                or has_torch_function((input, target, weight))):  # tensor subclasses: torch's
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
