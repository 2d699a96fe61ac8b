"""Deterministic stand-ins for the ops of a segmentation step that have no deterministic CUDA
kernel: bilinear upsampling's backward, cross-entropy's mean/sum reduction and attention's
backward.

PyTorch lists the first two among the ops that `torch.use_deterministic_algorithms` cannot
make deterministic (their CUDA kernels add with atomics), and every Table 1 step runs them;
the third it leaves non-deterministic in warn-only mode, the engine's (perf/cuda_ops.py lists
all three per cell). `deterministic_ops()` swaps them, for the duration
of a block, for the same arithmetic in deterministic kernels:

- bilinear / linear `F.interpolate` as a product with two interpolation matrices (the same
  source indices and weights as PyTorch's kernel; its backward is two matmuls:
  methods/interpolation.py);
- `F.cross_entropy` / `F.nll_loss` with `reduction='mean'|'sum'` as the per-pixel losses
  (`reduction='none'`, no atomics) summed by a deterministic reduction, divided as torch does;
- `F.scaled_dot_product_attention` (the MiT backbones' attention, through transformers) on its
  math backend, matmuls and a softmax: the memory-efficient kernel it picks on a GPU adds with
  atomics in its backward, and under `use_deterministic_algorithms(warn_only=True)` torch only
  warns once, naming it "Memory Efficient attention".

It patches `torch.nn.functional`, so library code (timm, torchvision, transformers, plugins)
that calls `F.interpolate` or `nn.Upsample` is covered too. Results equal the original ops to
float rounding. The engine uses this on a GPU with `train.deterministic` only
(benchmark/train/engine.py); on the CPU every kernel is deterministic already.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from methods.interpolation import LINEAR_MODES, matmul_interpolate, output_sizes, plain_call

_ORIGINAL = {"interpolate": F.interpolate, "cross_entropy": F.cross_entropy,
             "nll_loss": F.nll_loss}


def _interpolate(input: Tensor, size: Any = None, scale_factor: Any = None,
                 mode: str = "nearest", align_corners: bool | None = None,
                 recompute_scale_factor: bool | None = None, antialias: bool = False) -> Tensor:
    dims = LINEAR_MODES.get(mode)
    if (dims is None or antialias or input.dim() != dims + 2 or not input.is_floating_point()
            or not plain_call(input, dims, size, scale_factor, recompute_scale_factor)):
        # integer images: torch's rounding; unusual arguments: torch's checks
        return _ORIGINAL["interpolate"](input, size, scale_factor, mode, align_corners,
                                        recompute_scale_factor, antialias)
    if recompute_scale_factor and scale_factor is not None:
        size, scale_factor = output_sizes(input, dims, None, scale_factor)[0], None
    return matmul_interpolate(input, size, scale_factor, bool(align_corners))


def _reduced(per_item: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int,
             reduction: str) -> Tensor:
    """torch's 'sum' / 'mean' of per-item losses: mean = sum / (sum of the labelled items'
    class weights), by deterministic reductions."""
    if reduction == "sum":
        return per_item.sum()
    labelled = target != ignore_index
    if weight is None:
        return per_item.sum() / labelled.sum()
    return per_item.sum() / (weight[target.masked_fill(~labelled, 0)] * labelled).sum()


def _cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                   size_average: Any = None, ignore_index: int = -100, reduce: Any = None,
                   reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    if (reduction == "none" or size_average is not None or reduce is not None
            or label_smoothing or target.is_floating_point()):
        return _ORIGINAL["cross_entropy"](input, target, weight, size_average, ignore_index,
                                          reduce, reduction, label_smoothing)
    per_item = _ORIGINAL["cross_entropy"](input, target, weight, ignore_index=ignore_index,
                                          reduction="none")
    return _reduced(per_item, target, weight, ignore_index, reduction)


def _nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None,
              size_average: Any = None, ignore_index: int = -100, reduce: Any = None,
              reduction: str = "mean") -> Tensor:
    if reduction == "none" or size_average is not None or reduce is not None:
        return _ORIGINAL["nll_loss"](input, target, weight, size_average, ignore_index, reduce,
                                     reduction)
    per_item = _ORIGINAL["nll_loss"](input, target, weight, ignore_index=ignore_index,
                                     reduction="none")
    return _reduced(per_item, target, weight, ignore_index, reduction)


@contextlib.contextmanager
def deterministic_ops() -> Iterator[None]:
    """Within the block, `F.interpolate` (linear, bilinear), `F.cross_entropy` and `F.nll_loss`
    (mean, sum) run the deterministic versions above, and attention its math backend; restored
    on exit."""
    replacements = {"interpolate": _interpolate, "cross_entropy": _cross_entropy,
                    "nll_loss": _nll_loss}
    before = {name: getattr(F, name) for name in replacements}  # nested blocks restore theirs
    for name, fn in replacements.items():
        setattr(F, name, fn)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        for name, fn in before.items():
            setattr(F, name, fn)
