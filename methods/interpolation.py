"""Linear and bilinear interpolation as products with 1-D interpolation matrices.

Upsampling is linear in its input: out = W_h @ x @ W_w^T with two small matrices holding the
same source indices and weights as PyTorch's kernel, and its gradient is the transposed
product. Two uses:

- `matmul_interpolate`: forward and backward as matmuls, deterministic on every device (a GPU's
  bilinear backward adds with atomics): methods/deterministic.py;
- `matmul_backward_interpolation()`: on the CPU, torch's bilinear backward kernel is several
  times slower than the two matmuls (perf figure 10, perf/upsampling.py), so the engine
  trains on the CPU with this swap: the backward by matmuls, the forward by whichever of
  torch's kernel and the matmuls is faster for the input's size. Results equal torch's to
  float rounding (another order of the same sums) for finite values: a dense matrix
  multiplies every input by a weight, 0 where torch's kernel does not read it, so one inf or
  NaN spreads over its row or column (a run stops at a non-finite loss either way).
"""

from __future__ import annotations

import contextlib
import math
import operator
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

TORCH_INTERPOLATE = F.interpolate  # torch's own, as imported (swaps restore what they found)
LINEAR_MODES = {"linear": 1, "bilinear": 2}  # mode -> spatial dims
# Input sides up to this run the forward as matmuls too: the dense matrices cost about
# (in-height + in-width) multiply-adds an output pixel, less than torch's CPU kernel for small
# inputs; larger inputs keep torch's kernel (perf figure 10 times both kinds of row).
MATMUL_FORWARD_MAX_SIDE = 64


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


def _per_axis(value: Any, dims: int) -> list[Any]:
    return list(value) if isinstance(value, (tuple, list)) else [value] * dims


def output_sizes(x: Tensor, dims: int, size: Any, scale_factor: Any
                 ) -> tuple[list[int], list[float | None]]:
    """Output sizes and the per-dimension scale factors PyTorch's kernel uses (None: in/out)."""
    spatial = list(x.shape[-dims:])
    if size is not None:
        return [operator.index(s) for s in _per_axis(size, dims)], [None] * dims
    factors = [float(f) for f in _per_axis(scale_factor, dims)]
    return [math.floor(n * f) for n, f in zip(spatial, factors)], factors


def plain_call(x: Tensor, dims: int, size: Any, scale_factor: Any, recompute: Any) -> bool:
    """Whether the matrices compute this call as torch does: a non-empty input, exactly one
    of size / scale_factor, one positive integer size or positive finite factor per spatial
    axis (or one for all), recompute only with a factor. Other calls go to torch's
    `F.interpolate`, which raises its own error or handles them."""
    if x.numel() == 0 or (size is None) == (scale_factor is None) or (size is not None
                                                                     and recompute):
        return False
    values = _per_axis(size if size is not None else scale_factor, dims)
    try:
        if len(values) != dims:
            return False
        if size is not None:
            return all(operator.index(v) > 0 for v in values)
        return all(math.isfinite(float(f)) and float(f) > 0 for f in values) and all(
            n > 0 for n in output_sizes(x, dims, None, scale_factor)[0])
    except TypeError:
        return False


def axis_matrices(x: Tensor, sizes: list[int], factors: list[float | None],
                  align_corners: bool, dtype: torch.dtype) -> list[Tensor | None]:
    """One interpolation matrix per spatial axis, the last axis first; None where the axis is
    copied. An axis whose size does not change is copied by torch's CPU kernel whatever the
    scale factor, while its CUDA kernel (UpSampleBilinear2d.cu) applies a factor other than 1."""
    dims = len(sizes)
    matrices: list[Tensor | None] = []
    for axis in range(1, dims + 1):
        n_in, n_out, factor = x.shape[-axis], sizes[-axis], factors[-axis]
        copied = n_in == n_out and (factor in (None, 1.0) or x.device.type == "cpu")
        matrices.append(None if copied else
                        interpolation_matrix(n_in, n_out, align_corners, factor,
                                             device=x.device, dtype=dtype))
    return matrices


def apply_matrices(x: Tensor, matrices: list[Tensor | None]) -> Tensor:
    """x interpolated by `axis_matrices`: (.., W) @ W_w^T, then W_h @ (.., H, W')."""
    for axis, weights in enumerate(matrices, start=1):
        if weights is not None:
            x = x @ weights.T if axis == 1 else weights @ x
    return x


def matmul_interpolate(x: Tensor, size: Any = None, scale_factor: Any = None,
                       align_corners: bool = False) -> Tensor:
    """Linear (3-D input) or bilinear (4-D) interpolation as products with interpolation
    matrices: deterministic forward and backward on every device."""
    dims = x.dim() - 2
    sizes, factors = output_sizes(x, dims, size, scale_factor)
    # float32 for half inputs: torch's kernel computes in float32 and rounds once, where
    # half-precision weights would round each weight (exact only for power-of-two ratios)
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    with torch.autocast(device_type=x.device.type, enabled=False):  # no down-cast of the matmuls
        out = apply_matrices(work, axis_matrices(x, sizes, factors, align_corners, work.dtype))
    return x.clone() if out is work else out.to(x.dtype)


class _MatmulBackwardInterpolate(torch.autograd.Function):
    """Interpolation whose backward is the transposed matrix product; the forward is the
    matmuls for small inputs and torch's kernel otherwise. First-order gradients only
    (a double backward raises), which is all training takes."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, size: Any, scale_factor: Any, align_corners: bool,
                mode: str) -> Tensor:
        dims = LINEAR_MODES[mode]
        sizes, factors = output_sizes(x, dims, size, scale_factor)
        matrices = axis_matrices(x, sizes, factors, align_corners, x.dtype)
        ctx.matrices = matrices
        if max(x.shape[-dims:]) <= MATMUL_FORWARD_MAX_SIDE:
            out = apply_matrices(x, matrices)
            return x.clone() if out is x else out
        return TORCH_INTERPOLATE(x, size, scale_factor, mode, align_corners)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        for axis, weights in enumerate(ctx.matrices, start=1):
            if weights is not None:  # the transpose of apply_matrices' product on this axis
                grad = grad @ weights if axis == 1 else weights.T @ grad
        return grad, None, None, None, None


def _training_interpolate(input: Tensor, size: Any = None, scale_factor: Any = None,
                          mode: str = "nearest", align_corners: bool | None = None,
                          recompute_scale_factor: bool | None = None,
                          antialias: bool = False) -> Tensor:
    """`F.interpolate`, with the matmul backward for linear and bilinear upsampling of a
    float32/float64 CPU tensor that needs a gradient; torch's kernel for everything else."""
    dims = LINEAR_MODES.get(mode)
    if (dims is None or antialias or input.dim() != dims + 2 or input.device.type != "cpu"
            or input.dtype not in (torch.float32, torch.float64)
            or not (input.requires_grad and torch.is_grad_enabled())
            or torch.is_autocast_enabled("cpu")  # torch's kernel keeps autocast's dtypes
            or not plain_call(input, dims, size, scale_factor, recompute_scale_factor)):
        return TORCH_INTERPOLATE(input, size, scale_factor, mode, align_corners,
                                 recompute_scale_factor, antialias)
    if recompute_scale_factor and scale_factor is not None:
        size, scale_factor = output_sizes(input, dims, None, scale_factor)[0], None
    return _MatmulBackwardInterpolate.apply(input, size, scale_factor, bool(align_corners), mode)


@contextlib.contextmanager
def matmul_backward_interpolation() -> Iterator[None]:
    """Within the block, `F.interpolate` (and so `nn.Upsample`, in library code too) runs
    `_training_interpolate`; what was there before is restored on exit."""
    before = F.interpolate
    F.interpolate = _training_interpolate
    try:
        yield
    finally:
        F.interpolate = before
