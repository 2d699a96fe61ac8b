"""Deterministic stand-ins for the two ops of a segmentation step that have no deterministic
CUDA kernel: bilinear upsampling's backward and cross-entropy's mean/sum reduction.

PyTorch lists both among the ops that `torch.use_deterministic_algorithms` cannot make
deterministic (their CUDA kernels add with atomics), and every Table 1 step runs them
(perf/cuda_ops.py lists them per cell). `deterministic_ops()` swaps them, for the duration
of a block, for the same arithmetic in deterministic kernels:

- bilinear / linear `F.interpolate` as a product with two interpolation matrices (the same
  source indices and weights as PyTorch's kernel; its backward is two matmuls);
- `F.cross_entropy` / `F.nll_loss` with `reduction='mean'|'sum'` as the per-pixel losses
  (`reduction='none'`, no atomics) summed by a deterministic reduction, divided as torch does.

It patches `torch.nn.functional`, so library code (timm, torchvision, transformers, plugins)
that calls `F.interpolate` or `nn.Upsample` is covered too. Results equal the original ops to
float rounding; the matmuls cost more arithmetic, which a GPU pays easily and a CPU does not,
so the engine uses this only on a GPU with `train.deterministic` (benchmark/train/engine.py).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

_ORIGINAL = {"interpolate": F.interpolate, "cross_entropy": F.cross_entropy,
             "nll_loss": F.nll_loss}
_LINEAR_MODES = {"linear": 1, "bilinear": 2}  # mode -> spatial dims


def interpolation_matrix(size_in: int, size_out: int, align_corners: bool,
                         scale_factor: float | None = None, *, device: Any = None,
                         dtype: torch.dtype = torch.float32) -> Tensor:
    """(size_out, size_in) weights of 1-D linear interpolation, as PyTorch's kernels compute
    them (`area_pixel_compute_scale` / `area_pixel_compute_source_index`, in float64 for float64
    and float32 for every other dtype, as their accumulate type)."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    dst = torch.arange(size_out, dtype=compute, device=device)
    if align_corners:
        scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        src = dst * scale
    else:
        scale = 1.0 / scale_factor if scale_factor else size_in / size_out
        src = ((dst + 0.5) * scale - 0.5).clamp(min=0.0)
    low = src.floor().long().clamp(max=size_in - 1)
    high = (low + 1).clamp(max=size_in - 1)
    frac = (src - low.to(compute))[:, None]
    cols = torch.arange(size_in, device=device)[None, :]
    weights = (cols == low[:, None]) * (1.0 - frac) + (cols == high[:, None]) * frac
    return weights.to(dtype)


def _output_sizes(x: Tensor, dims: int, size: Any, scale_factor: Any
                  ) -> tuple[list[int], list[float | None]]:
    """Output sizes and the per-dimension scale factors PyTorch's kernel uses (None: in/out)."""
    spatial = list(x.shape[-dims:])
    if size is not None:
        sizes = [int(size)] * dims if isinstance(size, int) else [int(s) for s in size]
        return sizes, [None] * dims
    factors = ([float(scale_factor)] * dims if isinstance(scale_factor, (int, float))
               else [float(f) for f in scale_factor])
    return [math.floor(n * f) for n, f in zip(spatial, factors)], factors


def matmul_interpolate(x: Tensor, size: Any = None, scale_factor: Any = None,
                       align_corners: bool = False) -> Tensor:
    """Linear (3-D input) or bilinear (4-D) interpolation as products with interpolation
    matrices: deterministic forward and backward on every device."""
    dims = x.dim() - 2
    sizes, factors = _output_sizes(x, dims, size, scale_factor)
    # float32 for half inputs: torch's kernel computes in float32 and rounds once, where
    # half-precision weights would round each weight (exact only for power-of-two ratios)
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    out = work
    with torch.autocast(device_type=x.device.type, enabled=False):  # no down-cast of the matmuls
        for axis in range(1, dims + 1):  # the last spatial dimension first
            n_in, n_out, factor = x.shape[-axis], sizes[-axis], factors[-axis]
            if n_in == n_out and factor in (None, 1.0):
                continue  # an exact copy
            weights = interpolation_matrix(n_in, n_out, align_corners, factor,
                                           device=x.device, dtype=work.dtype)
            out = out @ weights.T if axis == 1 else weights @ out  # (.., W) / (.., H, W')
    return x.clone() if out is work else out.to(x.dtype)


def _interpolate(input: Tensor, size: Any = None, scale_factor: Any = None,
                 mode: str = "nearest", align_corners: bool | None = None,
                 recompute_scale_factor: bool | None = None, antialias: bool = False) -> Tensor:
    dims = _LINEAR_MODES.get(mode)
    if (dims is None or antialias or input.dim() != dims + 2 or not input.is_floating_point()
            or (size is None) == (scale_factor is None)):  # integer images: torch's rounding
        return _ORIGINAL["interpolate"](input, size, scale_factor, mode, align_corners,
                                        recompute_scale_factor, antialias)
    if recompute_scale_factor and scale_factor is not None:
        size, scale_factor = _output_sizes(input, dims, None, scale_factor)[0], None
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
    (mean, sum) run the deterministic versions above; restored on exit."""
    replacements = {"interpolate": _interpolate, "cross_entropy": _cross_entropy,
                    "nll_loss": _nll_loss}
    before = {name: getattr(F, name) for name in replacements}  # nested blocks restore theirs
    for name, fn in replacements.items():
        setattr(F, name, fn)
    try:
        yield
    finally:
        for name, fn in before.items():
            setattr(F, name, fn)
